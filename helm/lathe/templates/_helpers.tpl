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

{{/* "repository:tag" of an image block; an empty tag means the chart's appVersion. */}}
{{- define "lathe.imageRef" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
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
