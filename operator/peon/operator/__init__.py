"""The operator (`peon-operator`): kopf's handlers for the custom resources, the streams and cache
for the children, pods and Secrets, the queue and the reconcilers."""
