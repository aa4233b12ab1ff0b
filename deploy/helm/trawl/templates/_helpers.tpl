{{- define "trawl.labels" -}}
app.kubernetes.io/name: trawl
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "trawl.selector" -}}
app.kubernetes.io/name: trawl
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "trawl.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "trawl.secretName" -}}
{{ .Values.existingSecret | default (printf "%s-token" .Release.Name) }}
{{- end }}

{{- define "trawl.logEnv" -}}
- name: RUST_LOG
  value: {{ .Values.logLevel | quote }}
{{- end }}

{{- define "trawl.hubTlsSecret" -}}
{{ .Values.hubTls.existingSecret | default (printf "%s-hub-tls" .Release.Name) }}
{{- end }}

{{- define "trawl.apiTokenEnv" -}}
- name: TRAWL_API_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "trawl.secretName" . }}
      key: api-token
      # Missing: the hub refuses to start and says why, rather than
      # waiting for a key that never comes.
      optional: true
- name: TRAWL_ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "trawl.secretName" . }}
      key: admin-token
      optional: true
{{- end }}
