{{/* Names, labels and the pieces the scheduler, executor and migration pods share. */}}

{{- define "jobsched.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's base name: the release name alone when it already contains the chart's. */}}
{{- define "jobsched.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "jobsched.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "jobsched.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "jobsched.selectorLabels" -}}
app.kubernetes.io/name: {{ include "jobsched.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "jobsched.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 }}
{{ include "jobsched.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: jobsched
{{- end }}

{{/* Labels of one component: (dict "root" $ "component" "scheduler"). */}}
{{- define "jobsched.componentLabels" -}}
{{ include "jobsched.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "jobsched.componentSelectorLabels" -}}
{{ include "jobsched.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "jobsched.schedulerName" -}}
{{- printf "%s-scheduler" (include "jobsched.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "jobsched.headlessName" -}}
{{- printf "%s-scheduler-headless" (include "jobsched.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "jobsched.executorName" -}}
{{- printf "%s-executor" (include "jobsched.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "jobsched.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "jobsched.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "jobsched.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The configuration file's text: config.inline when given (helm --set-file config.inline=FILE),
else config.file from the chart's config/ directory, which is deploy/config/ (a link).
*/}}
{{- define "jobsched.configText" -}}
{{- if .Values.config.inline }}
{{- .Values.config.inline }}
{{- else }}
{{- $text := .Files.Get (printf "config/%s" .Values.config.file) }}
{{- if not $text }}
{{- fail (printf "config.file %q is not in the chart's config/ directory (deploy/config/)" .Values.config.file) }}
{{- end }}
{{- $text }}
{{- end }}
{{- end }}

{{/* The configuration file parsed, as JSON: (include "jobsched.config" . | fromJson). */}}
{{- define "jobsched.config" -}}
{{- $config := include "jobsched.configText" . | fromToml }}
{{- if hasKey $config "Error" }}
{{- fail (printf "the configuration file is not valid TOML: %s" $config.Error) }}
{{- end }}
{{- $config | toJson }}
{{- end }}

{{/* Seconds an executor's running jobs get on SIGTERM: [executor] grace, default 30. */}}
{{- define "jobsched.executorGrace" -}}
{{- $config := include "jobsched.config" . | fromJson }}
{{- $executor := get $config "executor" | default dict }}
{{- get $executor "grace" | default 30 | float64 | ceil | int }}
{{- end }}

{{/*
Executor pods get the grace plus a margin (the hand-back of what is still running and the
stream's close). A value below that would kill draining executors, so it is refused.
*/}}
{{- define "jobsched.executorTerminationGrace" -}}
{{- $grace := include "jobsched.executorGrace" . | int }}
{{- $period := .Values.executor.terminationGracePeriodSeconds | default (add $grace .Values.executor.terminationGraceMargin) | int }}
{{- if le $period $grace }}
{{- fail (printf "executor.terminationGracePeriodSeconds (%d) must exceed the executor's grace (%d s, from the configuration file)" $period $grace) }}
{{- end }}
{{- $period }}
{{- end }}

{{/*
Schedulers outlast the executors' drain: when a whole release stops at once (an uninstall, a
node drain) an executor still hands its jobs back through a scheduler.
*/}}
{{- define "jobsched.schedulerTerminationGrace" -}}
{{- .Values.scheduler.terminationGracePeriodSeconds | default (add (include "jobsched.executorTerminationGrace" . | int) .Values.scheduler.preStopSleepSeconds) | int }}
{{- end }}

{{- define "jobsched.databaseSecretName" -}}
{{- default (printf "%s-database" (include "jobsched.fullname" .)) .Values.database.existingSecret }}
{{- end }}

{{/* The scheduler's address for executors: every ready replica, through the headless Service. */}}
{{- define "jobsched.schedulerTarget" -}}
{{- printf "dns:///%s.%s.svc.%s:%d" (include "jobsched.headlessName" .) .Release.Namespace .Values.clusterDomain (int .Values.scheduler.port) }}
{{- end }}

{{- define "jobsched.databaseEnv" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "jobsched.databaseSecretName" . }}
      key: {{ .Values.database.existingSecretKey }}
{{- end }}

{{- define "jobsched.configEnv" -}}
- name: JOBSCHED_CONFIG
  value: /etc/jobsched/jobsched.toml
{{- end }}

{{- define "jobsched.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "jobsched.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.runAsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Annotations that roll the pods when the configuration or the chart's database URL change. */}}
{{- define "jobsched.checksums" -}}
checksum/config: {{ include "jobsched.configText" . | sha256sum }}
{{- if not .Values.database.existingSecret }}
checksum/database: {{ .Values.database.url | default "" | sha256sum }}
{{- end }}
{{- end }}

{{/* The migration container, for the hook Job and the init container alike. */}}
{{- define "jobsched.migrateContainer" -}}
- name: migrate
  image: {{ include "jobsched.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["migrate"]
  env:
    {{- include "jobsched.databaseEnv" . | nindent 4 }}
  securityContext:
    {{- include "jobsched.containerSecurityContext" . | nindent 4 }}
  resources:
    {{- toYaml .Values.migrations.resources | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
{{- end }}

{{- define "jobsched.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end }}

{{/* Authentication (auth.mode): the Secret holding the admin and executors' keys. */}}
{{- define "jobsched.authSecretName" -}}
{{- default (printf "%s-auth" (include "jobsched.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{/*
The schedulers' authentication: --auth required with the first admin key and the executors'
key from the Secret; or --auth off, which on every interface needs --insecure (the
NetworkPolicy is then all that guards the port).
*/}}
{{- define "jobsched.schedulerAuthEnv" -}}
- name: JOBSCHED_AUTH
  value: {{ .Values.auth.mode | quote }}
{{- if eq .Values.auth.mode "required" }}
- name: JOBSCHED_BOOTSTRAP_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "jobsched.authSecretName" . }}
      key: {{ .Values.auth.adminKeyKey }}
- name: JOBSCHED_BOOTSTRAP_EXECUTOR_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "jobsched.authSecretName" . }}
      key: {{ .Values.auth.executorKeyKey }}
{{- else }}
- name: JOBSCHED_INSECURE
  value: "true"
{{- end }}
{{- end }}

{{/* The executors send the executors' key on their stream (authorization: Bearer). */}}
{{- define "jobsched.executorAuthEnv" -}}
{{- if eq .Values.auth.mode "required" }}
- name: JOBSCHED_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "jobsched.authSecretName" . }}
      key: {{ .Values.auth.executorKeyKey }}
{{- end }}
{{- end }}

{{/* A fresh API key: jsk_ and 43 characters of [A-Za-z0-9] (256 bits), as the scheduler takes. */}}
{{- define "jobsched.newKey" -}}
{{- printf "jsk_%s" (randAlphaNum 43) }}
{{- end }}
