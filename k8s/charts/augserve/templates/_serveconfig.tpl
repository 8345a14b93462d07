{{/* The Serve config (serveConfigV2): the application `make serve` runs
(orchestrator.app:build_app), with one replica deployment per GPU class, pinned by
accelerator_type, and the control plane pinned to the system group. */}}
{{- define "augserve.serveConfig" -}}
{{- $models := dict -}}
{{- range .Values.models -}}{{- $_ := set $models .name .path -}}{{- end -}}
{{- $redis := ne .Values.redis.mode "none" -}}
{{- $replicas := list -}}
{{- $deployments := list -}}
{{- $system := dict "resources" (dict "augserve_system" 1) -}}
{{- $deployments = append $deployments (dict "name" "Ingress" "num_replicas" (int .Values.system.ingressReplicas) "ray_actor_options" (merge (dict "num_cpus" 1) $system)) -}}
{{- if dig "enabled" true .Values.predictor -}}
{{- $deployments = append $deployments (dict "name" "Predictor" "num_replicas" 1 "ray_actor_options" (merge (dict "num_cpus" 2) $system)) -}}
{{- end -}}
{{- $deployments = append $deployments (dict "name" "QueueManager" "num_replicas" 1 "ray_actor_options" (merge (dict "num_cpus" 1) $system)) -}}
{{- range .Values.gpuClasses -}}
{{- if gt (int .replicas) 0 -}}{{/* Serve wants num_replicas > 0: an empty class has only its (empty) worker group */}}
{{- $name := printf "replica-%s" .name -}}
{{- $replica := dict "name" $name "gpu_class" .acceleratorType "model_name" .model "model_path" (get $models .model) -}}
{{- $replica = merge $replica (deepCopy (pick . "engine" "room" "scheduling")) -}}
{{- $replicas = append $replicas $replica -}}
{{- $deployments = append $deployments (dict "name" $name "num_replicas" (int .replicas) "ray_actor_options" (dict "num_cpus" 1 "num_gpus" 1 "accelerator_type" .acceleratorType)) -}}
{{- end -}}
{{- end -}}
{{- $queue := deepCopy .Values.queue -}}
{{- $predictor := deepCopy .Values.predictor -}}
{{- if $redis -}}
{{- $source := dict "redis_url_env" "AUGSERVE_REDIS_URL" -}}
{{- if include "augserve.redis.secretName" . -}}{{- $_ := set $source "redis_password_env" "AUGSERVE_REDIS_PASSWORD" -}}{{- end -}}
{{- $_ := set $queue "durability" (merge (deepCopy $source) (default (dict) $queue.durability)) -}}
{{- $_ := set $predictor "server" (merge (deepCopy $source) (default (dict) $predictor.server)) -}}
{{- end -}}
{{- $args := dict "replicas" $replicas "queue" $queue "predictor" $predictor -}}
{{- if .Values.sloClasses -}}{{- $_ := set $args "slo_classes" (deepCopy .Values.sloClasses) -}}{{- end -}}
{{- if .Values.ingress -}}{{- $_ := set $args "ingress" (deepCopy .Values.ingress) -}}{{- end -}}
{{- if .Values.tools -}}{{- $_ := set $args "tools" (deepCopy .Values.tools) -}}{{- end -}}
{{- $app := dict "name" "augserve" "route_prefix" "/" "import_path" "orchestrator.app:build_app" "args" $args "deployments" $deployments -}}
{{- $config := dict "proxy_location" "EveryNode" "http_options" (dict "host" "0.0.0.0" "port" 8000) "logging_config" (dict "log_level" .Values.serve.logLevel "enable_access_log" .Values.serve.accessLog) "applications" (list $app) -}}
{{- toYaml $config -}}
{{- end -}}
