{{/* Chart name, shortened to the 63 characters Kubernetes allows. */}}
{{- define "flyteagents.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, plus the chart name unless the release name contains it. */}}
{{- define "flyteagents.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "flyteagents.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "flyteagents.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flyteagents.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "flyteagents.labels" -}}
helm.sh/chart: {{ include "flyteagents.chart" . }}
{{ include "flyteagents.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "flyteagents.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "flyteagents.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Seconds between deletion and SIGKILL: enough for the preStop sleep and the drain. */}}
{{- define "flyteagents.terminationGracePeriodSeconds" -}}
{{- $needed := add (int .Values.preStopSleepSeconds) (int (ceil .Values.settings.gracePeriod)) }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $needed 10 }}
{{- else if le (int .Values.terminationGracePeriodSeconds) $needed }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed preStopSleepSeconds + settings.gracePeriod (%v), or SIGKILL cuts the drain short" .Values.terminationGracePeriodSeconds $needed) }}
{{- else }}
{{- int .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* Worker processes (FLYTEAGENTS_WORKERS): settings.workers, else the CPU limit, else the CPU
request, in whole CPUs rounded down, at least 1. In a container the CLI's own default reads the
cgroup limit too, but a pod with a request and no limit would otherwise get one per node core. */}}
{{- define "flyteagents.workers" -}}
{{- if not (kindIs "invalid" .Values.settings.workers) }}
{{- int .Values.settings.workers }}
{{- else }}
{{- $cpu := "" }}
{{- $resources := .Values.resources | default dict }}
{{- $limits := $resources.limits | default dict }}
{{- $requests := $resources.requests | default dict }}
{{- if $limits.cpu }}
{{- $cpu = toString $limits.cpu }}
{{- else if $requests.cpu }}
{{- $cpu = toString $requests.cpu }}
{{- end }}
{{- $millis := 1000 }}
{{- if hasSuffix "m" $cpu }}
{{- $millis = int (trimSuffix "m" $cpu) }}
{{- else if $cpu }}
{{- $millis = int (mulf (float64 $cpu) 1000) }}
{{- end }}
{{- max 1 (div $millis 1000) }}
{{- end }}
{{- end }}

{{/* A probe: gRPC health check in plaintext, a TCP connect with TLS (the kubelet's gRPC probe has no TLS). */}}
{{- define "flyteagents.probe" -}}
{{- if .root.Values.tls.enabled }}
tcpSocket:
  port: grpc
{{- else }}
grpc:
  port: {{ .root.Values.settings.port }}
{{- end }}
{{- range $key, $value := .probe }}
{{ $key }}: {{ $value }}
{{- end }}
{{- end }}
