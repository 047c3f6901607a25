{{/* The labels every object carries (the same as cronjob.yaml's). */}}
{{- define "rotator.labels" -}}
app.kubernetes.io/name: rotator
{{- end -}}

{{/*
The config as mounted: .Values.config with each environment's cert.controller defaulting to
.Values.sealedSecretsController (unless the environment names a cert.url). Returns YAML; use it
with fromYaml.
*/}}
{{- define "rotator.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- range $name, $env := $config.environments -}}
{{- $cert := $env.cert | default dict -}}
{{- if and (not $cert.controller) (not $cert.url) -}}
{{- $_ := set $cert "controller" (deepCopy $.Values.sealedSecretsController) -}}
{{- end -}}
{{- $_ := set $env "cert" $cert -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}

{{/* A RoleBinding of role (.name) in namespace (.namespace) to the job's ServiceAccount. */}}
{{- define "rotator.binding" -}}
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ .name }}
  namespace: {{ .namespace }}
  labels:
    {{- include "rotator.labels" .root | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ .name }}
subjects:
  - kind: ServiceAccount
    name: {{ .root.Values.serviceAccountName }}
    namespace: {{ .root.Values.namespace }}
{{- end -}}
