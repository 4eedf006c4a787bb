#!/usr/bin/env bash
# Creates (or replaces) the Secret `lusifer-secrets` that every manifest reads; nothing secret
# is ever written into a manifest, a ConfigMap or this repository.
#
#   deploy/k8s/make-secrets.sh --in-cluster          # overlays/dev: random passwords for the
#                                                    # in-cluster Redis and PostgreSQL
#   LUSIFER_BROKER_URL=rediss://:PW@host:6380/0 LUSIFER_DATABASE_URL=postgresql+psycopg://... \
#   REDIS_ADDRESS=host:6380 REDIS_PASSWORD=PW deploy/k8s/make-secrets.sh   # managed services
#
# LUSIFER_LLM_API_KEY (optional), FLOWER_BASIC_AUTH (user:password; generated when unset) and
# HF_TOKEN (optional, gated vLLM models) are taken from the environment. --dry-run prints the
# Secret as YAML instead of applying it; -n NAMESPACE (default lusifer).
# Values travel through a file readable by you only, never through a command line, where other
# users of the machine could read them in the process list.
set -euo pipefail

namespace=lusifer
in_cluster=0
dry_run=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --in-cluster) in_cluster=1 ;;
    --dry-run) dry_run=1 ;;
    -n) namespace="$2"; shift ;;
    *) echo "make-secrets: unknown option $1 (use --in-cluster, --dry-run, -n NAMESPACE)" >&2; exit 2 ;;
  esac
  shift
done

random() { python3 -c 'import secrets; print(secrets.token_hex(24))'; }

if [[ $in_cluster == 1 ]]; then
  redis_password="$(random)"
  postgres_password="$(random)"
  broker_url="redis://:${redis_password}@lusifer-redis.${namespace}.svc:6379/0"
  database_url="postgresql+psycopg://lusifer:${postgres_password}@lusifer-postgres.${namespace}.svc:5432/lusifer"
  redis_address="lusifer-redis.${namespace}.svc:6379"
else
  for name in LUSIFER_BROKER_URL LUSIFER_DATABASE_URL REDIS_ADDRESS REDIS_PASSWORD; do
    if [[ -z "${!name:-}" ]]; then
      echo "make-secrets: set $name (managed services), or pass --in-cluster" >&2
      exit 1
    fi
  done
  broker_url="$LUSIFER_BROKER_URL"
  database_url="$LUSIFER_DATABASE_URL"
  redis_address="$REDIS_ADDRESS"
  redis_password="$REDIS_PASSWORD"
  postgres_password=""
fi
flower_auth="${FLOWER_BASIC_AUTH:-lusifer:$(random)}"

umask 077
env_file="$(mktemp)"
trap 'rm -f "$env_file"' EXIT
{
  echo "broker-url=${broker_url}"
  echo "database-url=${database_url}"
  echo "redis-address=${redis_address}"
  echo "redis-password=${redis_password}"
  echo "flower-basic-auth=${flower_auth}"
  if [[ -n "$postgres_password" ]]; then echo "postgres-password=${postgres_password}"; fi
  if [[ -n "${LUSIFER_LLM_API_KEY:-}" ]]; then echo "llm-api-key=${LUSIFER_LLM_API_KEY}"; fi
  if [[ -n "${HF_TOKEN:-}" ]]; then echo "hf-token=${HF_TOKEN}"; fi
} >"$env_file"

secret() {
  kubectl create secret generic lusifer-secrets -n "$namespace" \
    --from-env-file="$env_file" --dry-run=client -o yaml
}
if [[ $dry_run == 1 ]]; then
  secret
else
  kubectl get namespace "$namespace" >/dev/null 2>&1 || kubectl create namespace "$namespace"
  secret | kubectl apply -f -
  echo "lusifer-secrets written to namespace $namespace; Flower's login:" \
    "kubectl -n $namespace get secret lusifer-secrets -o jsonpath='{.data.flower-basic-auth}' | base64 -d"
fi
