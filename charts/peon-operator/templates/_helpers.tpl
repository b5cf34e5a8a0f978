{{- define "peon.name" -}}peon-operator{{- end -}}
{{- define "peon.fullname" -}}{{ .Release.Name }}-peon-operator{{- end -}}
{{- define "peon.image" -}}{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}{{- end -}}
{{- define "peon.labels" -}}
app.kubernetes.io/name: {{ include "peon.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
{{- define "peon.selector" -}}
app.kubernetes.io/name: {{ include "peon.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
