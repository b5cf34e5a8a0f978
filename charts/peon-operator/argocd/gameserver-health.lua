-- Argo CD health for peon.dev/GameServer. In argocd-cm:
--   resource.customizations.health.peon.dev_GameServer: |
--     <this file>
hs = {}
if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for Peon to report on this server"
  return hs
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Peon has not acted on the latest spec yet"
  return hs
end
local ready, valid, updated = nil, nil, nil
if obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "Ready" then ready = c end
    if c.type == "Valid" then valid = c end
    if c.type == "Updated" then updated = c end
  end
end
local phase = obj.status.phase
if phase == "Error" or (valid ~= nil and valid.status == "False") then
  hs.status = "Degraded"
  hs.message = (valid ~= nil and valid.message) or "Peon cannot build this server"
elseif updated ~= nil and updated.status == "False" and updated.reason == "BackupFailed" then
  hs.status = "Degraded"
  hs.message = updated.message
elseif phase == "Running" then
  hs.status = "Healthy"
  hs.message = (ready ~= nil and ready.message) or "Running"
elseif phase == "Stopped" then
  hs.status = "Suspended"
  hs.message = (ready ~= nil and ready.message) or "Stopped"
else
  hs.status = "Progressing"
  hs.message = (ready ~= nil and ready.message) or phase
end
return hs
