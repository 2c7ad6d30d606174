{{- define "hello.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- /* The counter's pods carry their own name, so hello's selector (and Service) never picks them. */}}
{{- define "hello.counterLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}-counter
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: {{ .Chart.Name }}
{{- end }}

{{- define "hello.counterName" -}}
{{ .Release.Name }}-counter
{{- end }}

{{- define "hello.counterURL" -}}
http://{{ include "hello.counterName" . }}.{{ .Release.Namespace }}.svc.cluster.local:{{ .Values.counter.port }}
{{- end }}

{{- define "hello.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end }}
