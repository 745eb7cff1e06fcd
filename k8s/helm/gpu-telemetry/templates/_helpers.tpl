{{- define "gt.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "gt.headless" -}}
{{- printf "%s-headless" (include "gt.fullname" .) -}}
{{- end -}}

{{- define "gt.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "gt.labels" -}}
{{ include "gt.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "gt.secretName" -}}
{{- default (printf "%s-secret" (include "gt.fullname" .)) .Values.existingSecret -}}
{{- end -}}

{{/* The first pods' stable DNS names: <sts>-0.<headless>.<ns>.svc.cluster.local:<port>,... */}}
{{- define "gt.seeds" -}}
{{- $seeds := list -}}
{{- $n := min (int .Values.replicas) (int .Values.cluster.seedCount) -}}
{{- range $i := until (int $n) -}}
{{- $seeds = append $seeds (printf "%s-%d.%s.%s.svc.cluster.local:%d" (include "gt.fullname" $) $i (include "gt.headless" $) $.Release.Namespace (int $.Values.cluster.port)) -}}
{{- end -}}
{{- join "," $seeds -}}
{{- end -}}

{{- define "gt.csvConfigMap" -}}
{{- if .Values.stream.existingConfigMap -}}
{{- .Values.stream.existingConfigMap -}}
{{- else if .Values.stream.data -}}
{{- printf "%s-csv" (include "gt.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/*
Copies of every sample: the value given, else 2 with two pods or more, else 1.
*/}}
{{- define "gt.replicationFactor" -}}
{{- if .Values.replicationFactor -}}
{{- .Values.replicationFactor -}}
{{- else if ge (int .Values.replicas) 2 -}}
2
{{- else -}}
1
{{- end -}}
{{- end }}
