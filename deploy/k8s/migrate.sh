#!/usr/bin/env bash
# A release's migrations, before its rollout (README, "Kubernetes"):
#
#   deploy/k8s/migrate.sh deploy/k8s/overlays/<overlay> [kubectl flags, e.g. -n shop]
#
# Deletes the last release's Job shop-migrate (a finished Job cannot take a
# new image), applies the overlay's (`-l app.kubernetes.io/component=migrate`:
# the Job alone), then waits until it completes (exit 0) or fails (exit 1,
# with its log), whichever comes first. `kubectl wait
# --for=condition=complete` alone would sit out its whole timeout on a
# failed Job. The Job gives up by itself (backoffLimit 3,
# activeDeadlineSeconds 600), so this ends too; the deadline below is a
# backstop.
set -euo pipefail
overlay=${1:?usage: $0 deploy/k8s/overlays/<overlay> [kubectl flags]}
shift

kubectl "$@" delete job shop-migrate --ignore-not-found
kubectl "$@" apply -k "$overlay" -l app.kubernetes.io/component=migrate

deadline=$((SECONDS + 720))
while :; do
  # The types of the Job's true conditions: Complete, Failed (and, from
  # Kubernetes 1.31, SuccessCriteriaMet / FailureTarget before those).
  state=" $(kubectl "$@" get job shop-migrate \
    -o jsonpath='{range .status.conditions[?(@.status=="True")]}{.type}{" "}{end}') "
  case "$state" in
    *" Complete "*)
      echo "shop-migrate: complete"
      exit 0
      ;;
    *" Failed "*)
      echo "shop-migrate: failed; its log:" >&2
      kubectl "$@" logs job/shop-migrate --tail=100 >&2 || true
      exit 1
      ;;
  esac
  if ((SECONDS >= deadline)); then
    echo "shop-migrate: neither complete nor failed after 12 minutes" >&2
    exit 1
  fi
  sleep 5
done
