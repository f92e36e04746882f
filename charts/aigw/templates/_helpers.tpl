{{/*
Names and labels. The define names are the upstream chart's, so the GitLab
chart's overrides of them (gitlab.url, the key Secrets) keep applying.
*/}}
{{- define "ai-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ai-gateway.fullname" -}}
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

{{- define "ai-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ai-gateway.labels" -}}
helm.sh/chart: {{ include "ai-gateway.chart" . }}
{{ include "ai-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "ai-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ai-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ai-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ai-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ai-gateway.gitlab.url" -}}
{{- .Values.gitlab.url }}
{{- end }}

{{- define "ai-gateway.gitlab.apiUrl" -}}
{{- .Values.gitlab.apiUrl }}
{{- end }}

{{/* The generated keys Secret. */}}
{{- define "ai-gateway.jwtKeysSecret" -}}
{{- printf "%s-jwt-keys" (include "ai-gateway.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Per key: the Secret and the key inside it (the user's, else the generated one). */}}
{{- define "ai-gateway.aigwSigningKey.secret" -}}
{{- default (include "ai-gateway.jwtKeysSecret" .) .Values.aigwSigningKey.secret }}
{{- end }}
{{- define "ai-gateway.aigwSigningKey.key" -}}
{{- if .Values.aigwSigningKey.secret }}{{ default "signing_key" .Values.aigwSigningKey.key }}{{ else }}aigw-signing-key{{ end }}
{{- end }}
{{/* Validation keys (the previous signing key, during a rotation): only when given. */}}
{{- define "ai-gateway.aigwValidationKey.secret" -}}
{{- .Values.aigwValidationKey.secret }}
{{- end }}
{{- define "ai-gateway.aigwValidationKey.key" -}}
{{- default "validation_key" .Values.aigwValidationKey.key }}
{{- end }}
{{- define "ai-gateway.duoWorkflowSigningKey.secret" -}}
{{- default (include "ai-gateway.jwtKeysSecret" .) .Values.duoWorkflowSigningKey.secret }}
{{- end }}
{{- define "ai-gateway.duoWorkflowSigningKey.key" -}}
{{- if .Values.duoWorkflowSigningKey.secret }}{{ default "signing_key" .Values.duoWorkflowSigningKey.key }}{{ else }}duo-workflow-signing-key{{ end }}
{{- end }}
{{- define "ai-gateway.duoWorkflowValidationKey.secret" -}}
{{- .Values.duoWorkflowValidationKey.secret }}
{{- end }}
{{- define "ai-gateway.duoWorkflowValidationKey.key" -}}
{{- default "validation_key" .Values.duoWorkflowValidationKey.key }}
{{- end }}

{{/*
The keys the pod mounts: var (the gateway's variable; *_FILE is set), helper
(the define prefix), file (under /etc/aigw/keys), secret and key. A key whose
variable the user sets in extraEnvironmentVariables is theirs (doc 003's
inline PEM): not mounted, not generated. Validation keys only when given.
*/}}
{{- define "ai-gateway.keyFiles" -}}
{{- $user := dict }}
{{- range .Values.extraEnvironmentVariables }}{{ $_ := set $user (toString .name) true }}{{ end }}
{{- $keys := list }}
{{- range (list
    (list "AIGW_SELF_SIGNED_JWT__SIGNING_KEY" "aigwSigningKey" "aigw-signing-key.pem")
    (list "AIGW_SELF_SIGNED_JWT__VALIDATION_KEY" "aigwValidationKey" "aigw-validation-key.pem")
    (list "DUO_WORKFLOW_SELF_SIGNED_JWT__SIGNING_KEY" "duoWorkflowSigningKey" "duo-workflow-signing-key.pem")
    (list "DUO_WORKFLOW_SELF_SIGNED_JWT__VALIDATION_KEY" "duoWorkflowValidationKey" "duo-workflow-validation-key.pem")) }}
{{- $var := index . 0 }}
{{- $secret := include (printf "ai-gateway.%s.secret" (index . 1)) $ }}
{{- if and $secret (not (hasKey $user $var)) (not (hasKey $user (printf "%s_FILE" $var))) }}
{{- $keys = append $keys (dict "var" $var "helper" (index . 1) "file" (index . 2) "secret" $secret "key" (include (printf "ai-gateway.%s.key" (index . 1)) $)) }}
{{- end }}
{{- end }}
{{- toYaml $keys }}
{{- end }}

{{/* The generated Secret's keys that some mounted key uses. */}}
{{- define "ai-gateway.generatedKeys" -}}
{{- $jwt := include "ai-gateway.jwtKeysSecret" . }}
{{- $names := list }}
{{- range (include "ai-gateway.keyFiles" . | fromYamlArray) }}
{{- if eq .secret $jwt }}{{ $names = append $names .key }}{{ end }}
{{- end }}
{{- toYaml $names }}
{{- end }}

{{- define "ai-gateway.generatesKeys" -}}
{{- if include "ai-gateway.generatedKeys" . | fromYamlArray }}true{{ end }}
{{- end }}

{{- define "ai-gateway.image" -}}
{{- $registry := .Values.image.registry | default ((.Values.global).image).registry | default "" }}
{{- $repo := .Values.image.repository }}
{{- if $registry }}{{ $repo = printf "%s/%s" (trimSuffix "/" $registry) $repo }}{{ end }}
{{- $tag := .Values.image.tag | default .Chart.AppVersion | toString }}
{{- if .Values.image.digest }}
{{- if contains "@" $tag }}{{ $tag = (splitList "@" $tag) | first }}{{ end }}
{{- printf "%s:%s@%s" $repo $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repo $tag }}
{{- end }}
{{- end }}

{{- define "ai-gateway.pullSecrets" -}}
{{- $secrets := list }}
{{- range .Values.imagePullSecrets }}{{ $secrets = append $secrets (ternary (dict "name" .) . (kindIs "string" .)) }}{{ end }}
{{- range ((.Values.global).image).pullSecrets | default list }}{{ $secrets = append $secrets (ternary (dict "name" .) . (kindIs "string" .)) }}{{ end }}
{{- if $secrets }}
imagePullSecrets:
{{- toYaml (uniq $secrets) | nindent 2 }}
{{- end }}
{{- end }}

{{/* Native TLS: the Secret for each listener, or "". */}}
{{- define "ai-gateway.httpTlsSecret" -}}
{{- .Values.tls.secretName }}
{{- end }}
{{- define "ai-gateway.grpcTlsSecret" -}}
{{- $proxy := index .Values "grpc-tls-proxy" | default dict }}
{{- if and $proxy.enabled $proxy.tlsSecretName }}{{ $proxy.tlsSecretName }}{{ else }}{{ .Values.tls.secretName }}{{ end }}
{{- end }}

{{/* Custom CA sources: this chart's and the GitLab chart's global ones. */}}
{{- define "ai-gateway.customCAs" -}}
{{- $cas := concat (.Values.certificates.customCAs | default list) (((.Values.global).certificates).customCAs | default list) }}
{{- toYaml $cas }}
{{- end }}

{{- define "ai-gateway.docsMount" -}}/var/lib/aigw/docs{{- end }}

{{/* Whether a PodDisruptionBudget makes sense: more than one pod can run. */}}
{{- define "ai-gateway.multiReplica" -}}
{{- if .Values.autoscaling.enabled }}{{ if gt (int .Values.autoscaling.maxReplicas) 1 }}{{ if gt (int .Values.autoscaling.minReplicas) 1 }}true{{ end }}{{ end }}
{{- else if gt (int .Values.replicaCount) 1 }}true{{ end }}
{{- end }}

{{/* Kubernetes 1.30+ runs preStop sleep actions (no shell in the image). */}}
{{- define "ai-gateway.preStopSleep" -}}
{{- if and (gt (int .Values.shutdown.delaySeconds) 0) (semverCompare ">=1.30-0" .Capabilities.KubeVersion.Version) }}true{{ end }}
{{- end }}

{{/*
The container's environment: the chart's variables in order, minus any name
the user gives in extraEnvironmentVariables (a user's key variable also
drops the chart's *_FILE twin), then the user's, last.
*/}}
{{- define "ai-gateway.env" -}}
{{- $user := dict }}
{{- range .Values.extraEnvironmentVariables }}{{ $_ := set $user (toString .name) true }}{{ end }}
{{- $add := list }}
{{- $listen := .Values.listen.address | toString }}
{{- /* Empty would mean "no GitLab issuer" to the gateway: leave its default then. */}}
{{- with include "ai-gateway.gitlab.url" . }}
{{- $add = append $add (list "AIGW_GITLAB_URL" .) }}
{{- end }}
{{- with include "ai-gateway.gitlab.apiUrl" . }}
{{- $add = append $add (list "AIGW_GITLAB_API_URL" .) }}
{{- end }}
{{- with .Values.gitlab.additionalUrls }}
{{- $add = append $add (list "AIGW_ADDITIONAL_GITLAB_URLS" (join ", " .)) }}
{{- end }}
{{- $add = append $add (list "AIGW_CUSTOMER_PORTAL_URL" (.Values.customerPortalUrl | default "")) }}
{{- $add = append $add (list "DUO_WORKFLOW_AUTH__OIDC_CUSTOMER_PORTAL_URL" (.Values.customerPortalUrl | default "")) }}
{{- if .Values.authBypassExternal }}
{{- $add = append $add (list "AIGW_AUTH__BYPASS_EXTERNAL" "true") }}
{{- end }}
{{- $add = append $add (list "AIGW_LOGGING__LEVEL" (.Values.logging.level | toString)) }}
{{- $add = append $add (list "AIGW_LOGGING__FORMAT_JSON" (ternary "true" "false" (ne (toString .Values.logging.json) "false"))) }}
{{- $add = append $add (list "AIGW_CUSTOM_MODELS__ENABLED" "true") }}
{{- $add = append $add (list "AIGW_FASTAPI__API_HOST" $listen) }}
{{- $add = append $add (list "AIGW_FASTAPI__API_PORT" "5052") }}
{{- $add = append $add (list "DUO_WORKFLOW_SERVICE_HOST" $listen) }}
{{- $add = append $add (list "DUO_WORKFLOW_SERVICE_PORT" "50052") }}
{{- $add = append $add (list "AIGW_FASTAPI__METRICS_HOST" (ternary $listen "127.0.0.1" (.Values.metrics.enabled | default false))) }}
{{- $add = append $add (list "AIGW_FASTAPI__METRICS_PORT" "8082") }}
{{- if .Values.metrics.workflow.enabled }}
{{- $add = append $add (list "PROMETHEUS_METRICS__ADDR" $listen) }}
{{- $add = append $add (list "PROMETHEUS_METRICS__PORT" "8083") }}
{{- end }}
{{- range (include "ai-gateway.keyFiles" . | fromYamlArray) }}
{{- $add = append $add (list (printf "%s_FILE" .var) (printf "/etc/aigw/keys/%s" .file)) }}
{{- end }}
{{- if include "ai-gateway.httpTlsSecret" . }}
{{- $add = append $add (list "AIGW_FASTAPI__TLS__ENABLED" "true") }}
{{- $add = append $add (list "AIGW_FASTAPI__TLS__CERT_FILE" "/etc/aigw/tls/http/tls.crt") }}
{{- $add = append $add (list "AIGW_FASTAPI__TLS__KEY_FILE" "/etc/aigw/tls/http/tls.key") }}
{{- end }}
{{- if include "ai-gateway.grpcTlsSecret" . }}
{{- $add = append $add (list "DUO_WORKFLOW_TLS__ENABLED" "true") }}
{{- $add = append $add (list "DUO_WORKFLOW_TLS__CERT_FILE" "/etc/aigw/tls/grpc/tls.crt") }}
{{- $add = append $add (list "DUO_WORKFLOW_TLS__KEY_FILE" "/etc/aigw/tls/grpc/tls.key") }}
{{- end }}
{{- $cas := include "ai-gateway.customCAs" . | fromYamlArray }}
{{- if $cas }}
{{- $dirs := list }}
{{- range $i, $_ := $cas }}{{ $dirs = append $dirs (printf "/etc/aigw/ca.d/%d" $i) }}{{ end }}
{{- /* The image's public roots plus the private CAs: option 4 of the trust precedence. */}}
{{- $add = append $add (list "SSL_CERT_FILE" "/etc/ssl/certs/ca-certificates.crt") }}
{{- $add = append $add (list "SSL_CERT_DIR" (join ":" $dirs)) }}
{{- end }}
{{- if .Values.mtls.enabled }}
{{- $add = append $add (list "AIGW_MTLS__ENABLED" "true") }}
{{- $add = append $add (list "AIGW_MTLS__CERT_FILE" (printf "/etc/aigw/mtls/%s" .Values.mtls.certKey)) }}
{{- $add = append $add (list "AIGW_MTLS__KEY_FILE" (printf "/etc/aigw/mtls/%s" .Values.mtls.keyKey)) }}
{{- end }}
{{- if or .Values.docsSearch.dbPath .Values.docsSearch.volume }}
{{- $add = append $add (list "AIGW_DOCS_SEARCH__DB_PATH" (.Values.docsSearch.dbPath | default (printf "%s/docs.db" (include "ai-gateway.docsMount" .)))) }}
{{- end }}
{{- with .Values.scaleOut }}
{{- if gt (float64 .grpcMaxConnectionAgeSeconds) 0.0 }}
{{- $add = append $add (list "DUO_WORKFLOW_MAX_CONNECTION_AGE_S" (toString .grpcMaxConnectionAgeSeconds)) }}
{{- $add = append $add (list "DUO_WORKFLOW_MAX_CONNECTION_AGE_GRACE_S" (toString .grpcMaxConnectionAgeGraceSeconds)) }}
{{- end }}
{{- if gt (float64 .httpMaxConnectionAgeSeconds) 0.0 }}
{{- $add = append $add (list "AIGW_FASTAPI__MAX_CONNECTION_AGE_S" (toString .httpMaxConnectionAgeSeconds)) }}
{{- end }}
{{- if gt (float64 .fileWatchIntervalSeconds) 0.0 }}
{{- $add = append $add (list "AIGW_FILE_WATCH_INTERVAL_S" (toString .fileWatchIntervalSeconds)) }}
{{- end }}
{{- end }}
{{- with (.Values.vertexTextModel | default dict) }}
{{- with .project }}{{ $add = append $add (list "VERTEXAI_PROJECT" (toString .)) }}{{ end }}
{{- with .location }}{{ $add = append $add (list "VERTEXAI_LOCATION" (toString .)) }}{{ end }}
{{- if (.jsonKey | default dict).value }}
{{- $add = append $add (list "GOOGLE_APPLICATION_CREDENTIALS" "/etc/aigw/vertex/credentials.json") }}
{{- end }}
{{- end }}
{{- $add = append $add (list "AIGW_SHUTDOWN_GRACE_PERIOD_S" (toString .Values.shutdown.gracePeriodSeconds)) }}
{{- if not (include "ai-gateway.preStopSleep" .) }}
{{- $add = append $add (list "AIGW_SHUTDOWN_DELAY_S" (toString .Values.shutdown.delaySeconds)) }}
{{- end }}
{{- range $add }}
{{- $name := index . 0 }}
{{- if not (or (hasKey $user $name) (and (hasSuffix "_FILE" $name) (hasKey $user (trimSuffix "_FILE" $name)))) }}
- name: {{ $name }}
  value: {{ index . 1 | quote }}
{{- end }}
{{- end }}
{{- if and (.Values.anthropicApiKey | default dict).value (not (hasKey $user "ANTHROPIC_API_KEY")) }}
- name: ANTHROPIC_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "ai-gateway.providerKeysSecret" . }}
      key: anthropic-api-key
{{- end }}
{{- with .Values.extraEnvironmentVariables }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "ai-gateway.providerKeysSecret" -}}
{{- printf "%s-provider-keys" (include "ai-gateway.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ai-gateway.vertexKey" -}}
{{- ((.Values.vertexTextModel | default dict).jsonKey | default dict).value | default "" }}
{{- end }}

{{/* A probe with the scheme set for the HTTP listener's TLS unless the user chose one. */}}
{{- define "ai-gateway.probe" -}}
{{- $probe := deepCopy .probe }}
{{- if and $probe.httpGet (not $probe.httpGet.scheme) }}
{{- $_ := set $probe.httpGet "scheme" (ternary "HTTPS" "HTTP" (ne (include "ai-gateway.httpTlsSecret" .root) "")) }}
{{- end }}
{{- toYaml $probe }}
{{- end }}

{{/*
Checksums that roll the pods when what they mount changes: the references,
plus the content wherever `lookup` can see it (install and upgrade against a
cluster). The gateway also reloads these files in place (scaleOut).
*/}}
{{- define "ai-gateway.secretData" -}}
{{- $found := lookup "v1" .kind .namespace .name }}
{{- if $found }}{{ toYaml ($found.data | default dict) }}{{ end }}
{{- end }}

{{- define "ai-gateway.checksum.keys" -}}
{{- $parts := list }}
{{- range (include "ai-gateway.keyFiles" . | fromYamlArray) }}
{{- $parts = append $parts (printf "%s=%s/%s" .var .secret .key) }}
{{- $parts = append $parts (include "ai-gateway.secretData" (dict "kind" "Secret" "namespace" $.Release.Namespace "name" .secret)) }}
{{- end }}
{{- $parts = append $parts (include "ai-gateway.jwtKeysData" .) }}
{{- join "\n" $parts | sha256sum }}
{{- end }}

{{- define "ai-gateway.checksum.ca" -}}
{{- $parts := list (include "ai-gateway.customCAs" .) }}
{{- range (include "ai-gateway.customCAs" . | fromYamlArray) }}
{{- if .secret }}{{ $parts = append $parts (include "ai-gateway.secretData" (dict "kind" "Secret" "namespace" $.Release.Namespace "name" .secret)) }}{{ end }}
{{- if .configMap }}{{ $found := lookup "v1" "ConfigMap" $.Release.Namespace .configMap }}{{ if $found }}{{ $parts = append $parts (toYaml $found.data) }}{{ end }}{{ end }}
{{- end }}
{{- join "\n" $parts | sha256sum }}
{{- end }}

{{- define "ai-gateway.checksum.tls" -}}
{{- $parts := list }}
{{- range (list (include "ai-gateway.httpTlsSecret" .) (include "ai-gateway.grpcTlsSecret" .) (.Values.mtls.enabled | ternary .Values.mtls.secretName "")) }}
{{- $parts = append $parts . }}
{{- if . }}{{ $parts = append $parts (include "ai-gateway.secretData" (dict "kind" "Secret" "namespace" $.Release.Namespace "name" .)) }}{{ end }}
{{- end }}
{{- join "\n" $parts | sha256sum }}
{{- end }}

{{/*
The generated keys: kept from the live Secret when there is one (upgrades),
else made once here. Cached in .Values so every template sees the same keys.
*/}}
{{- define "ai-gateway.jwtKeysData" -}}
{{- if include "ai-gateway.generatesKeys" . }}
{{- if not (hasKey .Values "__aigwGeneratedKeys") }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "ai-gateway.jwtKeysSecret" .) }}
{{- $data := dict }}
{{- range (include "ai-gateway.generatedKeys" . | fromYamlArray) }}
{{- if and $existing (hasKey ($existing.data | default dict) .) }}
{{- $_ := set $data . (index $existing.data .) }}
{{- else }}
{{- $_ := set $data . (genPrivateKey "rsa" | b64enc) }}
{{- end }}
{{- end }}
{{- $_ := set .Values "__aigwGeneratedKeys" $data }}
{{- end }}
{{- toYaml (index .Values "__aigwGeneratedKeys") }}
{{- end }}
{{- end }}
