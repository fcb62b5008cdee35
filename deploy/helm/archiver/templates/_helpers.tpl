{{/* The release's resource name: the release, or release-chart when the release does not name the chart. */}}
{{- define "archiver.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "archiver.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "archiver.labels" -}}
{{ include "archiver.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "archiver.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "archiver.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "archiver.secretName" -}}
{{- default (include "archiver.fullname" .) .Values.secret.existingSecret -}}
{{- end -}}

{{- define "archiver.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* What every archiver container shares: the config file, the secret, the extra variables. */}}
{{- define "archiver.env" -}}
- name: ARCHIVER_CONFIG
  value: /etc/archiver/archiver.toml
- name: ARCHIVER_LOG_FORMAT
  value: json
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "archiver.envFrom" -}}
{{- if or .Values.secret.existingSecret .Values.secret.stringData -}}
envFrom:
  - secretRef:
      name: {{ include "archiver.secretName" . }}
{{- end -}}
{{- end -}}

{{- define "archiver.securityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{- define "archiver.podSecurityContext" -}}
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The config file and a writable scratch folder (the root filesystem is read-only). */}}
{{- define "archiver.volumeMounts" -}}
- name: config
  mountPath: /etc/archiver
  readOnly: true
- name: scratch
  mountPath: /tmp
{{- end -}}

{{- define "archiver.volumes" -}}
- name: config
  configMap:
    name: {{ include "archiver.fullname" . }}
- name: scratch
  emptyDir: {}
{{- end -}}
