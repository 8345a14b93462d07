{{/* Names and labels. */}}
{{- define "augserve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "augserve.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains (include "augserve.name" .) .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "augserve.name" .) | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "augserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "augserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "augserve.labels" -}}
{{ include "augserve.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Labels on every Ray pod: the metrics service selects them.  Not
app.kubernetes.io/name: KubeRay's own head service selects app.kubernetes.io/name=kuberay. */}}
{{- define "augserve.rayPodLabels" -}}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: {{ include "augserve.name" . }}
app.kubernetes.io/component: ray
{{- end -}}

{{- define "augserve.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Redis: where it is and the secret of its password ("" when none). */}}
{{- define "augserve.redis.address" -}}
{{- if eq .Values.redis.mode "internal" -}}
{{- printf "%s-redis:6379" (include "augserve.fullname" .) -}}
{{- else -}}
{{- .Values.redis.external.address -}}
{{- end -}}
{{- end -}}

{{/* "rediss" for an external Redis with TLS, else "redis". */}}
{{- define "augserve.redis.scheme" -}}
{{- ternary "rediss" "redis" (and (eq .Values.redis.mode "external") .Values.redis.external.tls) -}}
{{- end -}}

{{/* The app's Redis URL, without the password (that comes from AUGSERVE_REDIS_PASSWORD,
percent-encoded by the app, so any characters work). */}}
{{- define "augserve.redis.url" -}}
{{- printf "%s://%s/0" (include "augserve.redis.scheme" .) (include "augserve.redis.address" .) -}}
{{- end -}}

{{/* The GCS's Redis address: host:port, or rediss://host:port for TLS (Ray turns TLS
on by that scheme and takes no scheme as plain). */}}
{{- define "augserve.redis.gcsAddress" -}}
{{- $scheme := include "augserve.redis.scheme" . -}}
{{- if eq $scheme "rediss" }}rediss://{{ end }}{{ include "augserve.redis.address" . -}}
{{- end -}}

{{- define "augserve.redis.secretName" -}}
{{- if eq .Values.redis.mode "internal" -}}
{{- default (printf "%s-redis" (include "augserve.fullname" .)) .Values.redis.internal.existingSecret -}}
{{- else if eq .Values.redis.mode "external" -}}
{{- .Values.redis.external.passwordSecret.name -}}
{{- end -}}
{{- end -}}

{{- define "augserve.redis.secretKey" -}}
{{- if eq .Values.redis.mode "internal" -}}password{{- else -}}{{ .Values.redis.external.passwordSecret.key }}{{- end -}}
{{- end -}}

{{/* Environment of every Ray container: the Redis URL the queue manager and the
predictor read (redis_url_env), Serve's settings, the Hugging Face token. */}}
{{- define "augserve.env" -}}
- name: RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD
  value: "0"
- name: RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP
  value: "0"
{{- if ne .Values.redis.mode "none" }}
- name: AUGSERVE_REDIS_URL
  value: {{ include "augserve.redis.url" . | quote }}
{{- with include "augserve.redis.secretName" . }}
- name: AUGSERVE_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ include "augserve.redis.secretKey" $ }}
{{- end }}
{{- end }}
{{- if .Values.huggingFace.tokenSecret.name }}
- name: HF_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.huggingFace.tokenSecret.name }}
      key: {{ .Values.huggingFace.tokenSecret.key }}
{{- end }}
{{- end -}}

{{/* Checks the schema cannot express; each fails the render with a message naming the value. */}}
{{- define "augserve.validate" -}}
{{- if not .Values.gpuClasses -}}
{{- fail "gpuClasses is empty: list at least one GPU class (name, acceleratorType, model, replicas)" -}}
{{- end -}}
{{- if not .Values.models -}}
{{- fail "models is empty: list at least one model (name, path)" -}}
{{- end -}}
{{- $models := dict -}}
{{- range .Values.models -}}
{{- if hasKey $models .name -}}{{- fail (printf "models: %q is listed twice" .name) -}}{{- end -}}
{{- $_ := set $models .name .path -}}
{{- end -}}
{{- $seen := dict -}}
{{- $serving := dict "any" false -}}
{{- range $i, $c := .Values.gpuClasses -}}
{{- if not $c.name -}}{{- fail (printf "gpuClasses[%d] has no name" $i) -}}{{- end -}}
{{- if hasKey $seen $c.name -}}{{- fail (printf "gpuClasses: %q is listed twice" $c.name) -}}{{- end -}}
{{- $_ := set $seen $c.name true -}}
{{- if not $c.acceleratorType -}}{{- fail (printf "gpuClasses[%d] (%s) has no acceleratorType" $i $c.name) -}}{{- end -}}
{{- if or (not (hasKey $c "replicas")) (lt (int $c.replicas) 0) -}}
{{- fail (printf "gpuClasses[%d] (%s): replicas must be 0 or more, got %v" $i $c.name $c.replicas) -}}
{{- end -}}
{{- if gt (int $c.replicas) 0 -}}{{- $_ := set $serving "any" true -}}{{- end -}}
{{- if not $c.model -}}{{- fail (printf "gpuClasses[%d] (%s) names no model" $i $c.name) -}}{{- end -}}
{{- if not (hasKey $models $c.model) -}}
{{- fail (printf "gpuClasses[%d] (%s) serves model %q, which is not in models (%s)" $i $c.name $c.model (keys $models | sortAlpha | join ", ")) -}}
{{- end -}}
{{- end -}}
{{- if not $serving.any -}}
{{- fail "every GPU class has replicas: 0: give at least one class a replica" -}}
{{- end -}}
{{- if and (eq .Values.redis.mode "external") (not .Values.redis.external.address) -}}
{{- fail "redis.mode is external but redis.external.address (host:port) is empty" -}}
{{- end -}}
{{- if and .Values.gcsFaultTolerance.enabled (eq .Values.redis.mode "none") -}}
{{- fail "gcsFaultTolerance.enabled needs Redis: set redis.mode to internal or external, or disable gcsFaultTolerance" -}}
{{- end -}}
{{- if and (eq .Values.redis.mode "none") (eq (dig "durability" "mode" "best_effort" .Values.queue) "required") -}}
{{- fail "queue.durability.mode is required but redis.mode is none: use best_effort or run a Redis" -}}
{{- end -}}
{{- end -}}

{{/* The scheduling part of a Ray pod's spec: pull secrets, node selector, tolerations.
Called with (dict "root" $ "pod" <head | system | a GPU class>). */}}
{{- define "augserve.podPlacement" -}}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .pod.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .pod.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* A Ray worker container (system or GPU group) without its resources. */}}
{{- define "augserve.workerContainer" -}}
name: ray-worker
image: {{ include "augserve.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
ports:
  - {containerPort: 8000, name: serve}
  - {containerPort: 8080, name: metrics}
env:
  {{- include "augserve.env" . | nindent 2 }}
{{- end -}}
