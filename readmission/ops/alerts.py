"""The Prometheus alert rules, written once here with the metric names of
`readmission.names`; `python -m readmission.ops.monitoring render-alerts` writes them to
prometheus/alerts.yml (tests check the committed file is this rendering, `promtool` checks
and unit-tests it, `make k8s-sync` copies it for Kubernetes)."""

from __future__ import annotations

from readmission import names

#: The rules, `@NAME@` standing for `readmission.names.NAME`.
TEMPLATE = r"""# Alert rules of the readmission platform, loaded by prometheus.yml (rule_files).
#
# Severity: `critical` when requests are failing or nobody is served now; `warning` when
# something needs a look today (slow answers, a registry problem, drifting inputs, a model
# doing worse on real patients than on its test split).
# Every alert has `summary` and `description` annotations.
#
# Checked by `promtool check rules prometheus/alerts.yml` and unit-tested by
# `promtool test rules prometheus/alerts_test.yml` (both run by tests/ops).
groups:
  - name: readmission-api-availability
    rules:
      - alert: ApiDown
        expr: up{job="fast-api"} == 0
        for: 1m
        labels:
          severity: critical
        annotations:
          summary: "The inference API is down ({{ $labels.instance }})"
          description: >-
            Prometheus has not been able to scrape {{ $labels.instance }} (job
            {{ $labels.job }}) for a minute: the API is down or unreachable and no
            prediction can be served.

      # 5xx only: a 4xx (422 invalid encounter, 413 body too large) is the client's bad
      # input, answered correctly, so it is not an error of the service. It still counts in
      # the denominator: it is a request the API served. A 503 (no model loaded) counts.
      - alert: ApiHighErrorRatio
        expr: |
          sum by (job, instance) (rate(@HTTP_REQUESTS@{job="fast-api", status=~"5.."}[5m]))
            / sum by (job, instance) (rate(@HTTP_REQUESTS@{job="fast-api"}[5m]))
            > 0.01
        for: 5m
        labels:
          severity: critical
        annotations:
          summary: "More than 1 % of the API's requests fail with 5xx ({{ $labels.instance }})"
          description: >-
            {{ $value | humanizePercentage }} of the requests to {{ $labels.instance }}
            were answered with a 5xx status over the last 5 minutes, for 5 minutes (4xx
            client errors are not counted as failures).

      - alert: ApiSlowP95
        expr: |
          histogram_quantile(0.95,
            sum by (job, instance, le) (
              rate(@HTTP_DURATION@_bucket{job="fast-api", handler="/predict"}[5m])
            )
          ) > 0.2
        for: 5m
        labels:
          severity: warning
        annotations:
          summary: "/predict is slow: p95 above 200 ms ({{ $labels.instance }})"
          description: >-
            The 95th percentile of /predict response times on {{ $labels.instance }} has
            been {{ $value | humanizeDuration }} over the last 5 minutes, above 200 ms for
            5 minutes.

  - name: readmission-model-serving
    rules:
      # "Requests arrive" means /predict or /predict/batch requests that are not 4xx: a
      # stream of invalid encounters produces no prediction by design.
      - alert: NoPredictionsWhileRequestsArrive
        expr: |
          sum by (job, instance) (
            increase(@HTTP_REQUESTS@{
              job="fast-api", handler=~"/predict|/predict/batch", status!~"4.."
            }[15m])
          ) > 0
          unless on (job, instance)
          sum by (job, instance) (increase(@PREDICTIONS@{job="fast-api"}[15m])) > 0
        for: 5m
        labels:
          severity: critical
        annotations:
          summary: "Prediction requests arrive but no prediction is made ({{ $labels.instance }})"
          description: >-
            {{ $labels.instance }} received {{ $value | humanize }} prediction requests
            (4xx excluded) in the last 15 minutes without counting a single prediction in
            @PREDICTIONS@: no model is loaded, or scoring fails.

      - alert: ModelReloadFailures
        expr: increase(@MODEL_RELOADS@{job="fast-api", result="failure"}[10m]) > 0
        labels:
          severity: warning
        annotations:
          summary: "The API failed to check the registry or load a model ({{ $labels.instance }})"
          description: >-
            {{ $value | humanize }} failed registry checks or model loads on
            {{ $labels.instance }} in the last 10 minutes. The model already loaded keeps
            serving; see GET /model for the registry's last error.

      # The threshold is the API's (API setting exported as @DRIFT_THRESHOLD@), so it
      # is configured in one place only.
      - alert: InputDrift
        expr: |
          @DRIFT_PSI@{job="fast-api"}
            > on (job, instance) group_left ()
          @DRIFT_THRESHOLD@{job="fast-api"}
        for: 10m
        labels:
          severity: warning
        annotations:
          summary: "Input drift on {{ $labels.feature }} ({{ $labels.instance }})"
          description: >-
            The population stability index of {{ $labels.feature }}, recent requests
            against the training data, is {{ $value | printf "%.3f" }}, above the API's
            threshold (@DRIFT_THRESHOLD@) for 10 minutes: the model sees inputs
            unlike those it was trained on; consider retraining.

      # The version in service only (@MODEL_INFO@ == 1): a version rolled back from, or
      # a challenger, keeps its figures in the table but is no one's concern here.
      # Per served version: its realized <30 ROC-AUC (recent window, outcomes known) below
      # its own test figure minus the margin, over enough outcomes to trust the figure. The
      # margin and the minimum are the API's (PERFORMANCE_DROP_MARGIN and
      # PERFORMANCE_MIN_OUTCOMES, exported as @PERFORMANCE_MARGIN@ and
      # @PERFORMANCE_MIN_OUTCOMES@), configured in one place like InputDrift's threshold.
      # A version without a realized or test figure, or without the row counts, has no
      # series and cannot fire. Matching on (job, instance, version) leaves the alert just
      # those labels (and severity); the annotations query its outcomes and test figure.
      # for: 15m. The figures move only when model_performance_pipeline rewrites them (the
      # API rereads them every PERFORMANCE_REFRESH_SECONDS), so they do not flap and waiting
      # longer adds no evidence; 15 minutes outlasts an API restart or a missed scrape and
      # delays little an alert whose cause is days of outcomes old.
      - alert: RealizedPerformanceDrop
        expr: |
          (
            @MODEL_PERFORMANCE@{job="fast-api", source="realized", metric="roc_auc_lt30"}
              < on (job, instance, version)
            (
              @MODEL_PERFORMANCE@{job="fast-api", source="test", metric="roc_auc_lt30"}
                - on (job, instance) group_left ()
              @PERFORMANCE_MARGIN@{job="fast-api"}
            )
          )
          and on (job, instance, version)
          (
            @MODEL_PERFORMANCE_ROWS@{job="fast-api", kind="outcomes"}
              >= on (job, instance) group_left ()
            @PERFORMANCE_MIN_OUTCOMES@{job="fast-api"}
          )
          and on (job, instance, version)
          @MODEL_INFO@{job="fast-api"} == 1
        for: 15m
        labels:
          severity: warning
        annotations:
          summary: >-
            Model v{{ $labels.version }} does worse on real patients than on its test split
            ({{ $labels.instance }})
          description: >-
            The realized <30 ROC-AUC of model version {{ $labels.version }} on
            {{ $labels.instance }} is {{ $value | printf "%.3f" }} over the
            {{ with printf "@MODEL_PERFORMANCE_ROWS@{job='%s', instance='%s',
            version='%s', kind='outcomes'}" $labels.job $labels.instance $labels.version
            | query }}{{ . | first | value | printf "%.0f" }}{{ end }} predictions of its
            recent window whose outcome is known, against
            {{ with printf "@MODEL_PERFORMANCE@{job='%s', instance='%s', version='%s',
            source='test', metric='roc_auc_lt30'}" $labels.job $labels.instance
            $labels.version | query }}{{ . | first | value | printf "%.3f" }}{{ end }} on
            its test split: below it by more than the API's margin
            (@PERFORMANCE_MARGIN@) for 15 minutes. The model does worse on real
            patients than when it was promoted; see what was served when in GET
            /model/history, and `python -m readmission rollback --reason ...` restores the
            previous version.
"""

GENERATED = (
    "# GENERATED by `python -m readmission.ops.monitoring render-alerts` from\n"
    "# readmission/ops/alerts.py, where the rules are written: edit them there.\n"
)


def render_alerts() -> str:
    """The rules file, every `@NAME@` replaced by the metric name it stands for."""
    text = TEMPLATE
    for key in sorted(set(TEMPLATE.split("@")[1::2])):
        text = text.replace(f"@{key}@", getattr(names, key))
    return GENERATED + text
