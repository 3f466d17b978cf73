{{/* Chart name, overridable. */}}
{{- define "lathe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Prefix of every object name. Release "lathe" gives lathe-registry, lathe-gateway, ... which are
also the addresses services give each other (LATHE_<NAME>_ADDR).
*/}}
{{- define "lathe.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "lathe.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "lathe.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "lathe.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "lathe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: lathe
{{- end -}}

{{/* Selector labels of one service's pods. Call with (dict "root" $ "name" "registry"). */}}
{{- define "lathe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lathe.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{/* Object name of one service. Call with (dict "root" $ "name" "registry"). */}}
{{- define "lathe.componentName" -}}
{{- printf "%s-%s" (include "lathe.fullname" .root) .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* "repository@digest" of an image block when it has a digest, else "repository:tag" (an empty tag: the chart's appVersion). */}}
{{- define "lathe.imageRef" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The Secret and key holding the Postgres URL: the chart's own with the bundled Postgres. */}}
{{- define "lathe.postgresSecret" -}}
{{- if .Values.postgres.bundled.enabled -}}
{{- printf "%s-postgres" (include "lathe.fullname" .) -}}
{{- else -}}
{{- .Values.postgres.existingSecret -}}
{{- end -}}
{{- end -}}
{{- define "lathe.postgresKey" -}}
{{- if .Values.postgres.bundled.enabled -}}url{{- else -}}{{ .Values.postgres.urlKey }}{{- end -}}
{{- end -}}

{{/* The Secret holding the API keys: the chart's own when apiKeys.value is given. */}}
{{- define "lathe.apiKeysSecret" -}}
{{- if .Values.apiKeys.value -}}
{{- printf "%s-api-keys" (include "lathe.fullname" .) -}}
{{- else -}}
{{- .Values.apiKeys.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* The NATS URL: the chart's own server with nats.bundled. */}}
{{- define "lathe.natsUrl" -}}
{{- if .Values.nats.bundled.enabled -}}
{{- printf "nats://%s-nats:4222" (include "lathe.fullname" .) -}}
{{- else -}}
{{- required "nats.url is required (or nats.bundled.enabled)" .Values.nats.url -}}
{{- end -}}
{{- end -}}

{{/*
Secret-backed environment of every Lathe container (services, the migration Job): the Postgres
URL, and for the services the API keys, the page-token key and the LATHE_SECRET_* variables.
Call with (dict "root" $ "full" true).
*/}}
{{- define "lathe.secretEnv" -}}
- name: LATHE_PG_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "lathe.postgresSecret" .root }}
      key: {{ include "lathe.postgresKey" .root }}
{{- if .full }}
- name: LATHE_API_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ include "lathe.apiKeysSecret" .root }}
      key: {{ .root.Values.apiKeys.key }}
{{- with .root.Values.pageTokenSecret.existingSecret }}
- name: LATHE_PAGE_TOKEN_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.root.Values.pageTokenSecret.key }}
{{- end }}
{{- range $name, $ref := .root.Values.secrets.env }}
- name: LATHE_SECRET_{{ upper $name }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.secretName }}
      key: {{ $ref.key }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The restricted pod security every Lathe pod gets. */}}
{{- define "lathe.podSecurity" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end -}}

{{- define "lathe.trainerServiceAccountName" -}}
{{- if .Values.trainer.serviceAccount.create -}}
{{- default (printf "%s-trainer" (include "lathe.fullname" .)) .Values.trainer.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.trainer.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "lathe.artifactsClaimName" -}}
{{- default (printf "%s-artifacts" (include "lathe.fullname" .)) .Values.artifacts.existingClaim -}}
{{- end -}}

{{/* Seconds Kubernetes waits after SIGTERM: the service's drain time plus 5 s to exit. */}}
{{- define "lathe.terminationGraceSeconds" -}}
{{- add (div (int .Values.shutdownGraceMs) 1000) 5 -}}
{{- end -}}
