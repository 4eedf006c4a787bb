"""KEDA's custom resources as strict pydantic models, for validating manifests without a cluster.

kubernetes-validate ships the schemas of Kubernetes' own kinds only. These models hold the
fields of ``keda.sh/v1alpha1`` ScaledObject and TriggerAuthentication that KEDA 2.x documents
(https://keda.sh/docs/latest/reference/scaledobject-spec/), and the metadata keys of the two
scalers the manifests use; anything else (a misspelt field, a key the scaler does not know) is
refused, as the CRD's structural schema and the scaler's parser would refuse it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    namespace: str | None = None
    labels: dict[str, str] = {}


class ScaleTargetRef(Strict):
    name: str
    kind: str | None = None
    api_version: str | None = Field(default=None, alias="apiVersion")
    env_source_container_name: str | None = Field(default=None, alias="envSourceContainerName")


class AuthenticationRef(Strict):
    name: str
    kind: Literal["TriggerAuthentication", "ClusterTriggerAuthentication"] | None = None


# Metadata keys each scaler reads (values are strings, as in the CRD).
REDIS_KEYS = {
    "address",
    "addressFromEnv",
    "host",
    "hostFromEnv",
    "port",
    "portFromEnv",
    "username",
    "usernameFromEnv",
    "passwordFromEnv",
    "listName",
    "listLength",
    "activationListLength",
    "databaseIndex",
    "enableTLS",
    "unsafeSsl",
}
METRICS_API_KEYS = {
    "url",
    "format",
    "valueLocation",
    "targetValue",
    "activationTargetValue",
    "authMode",
    "unsafeSsl",
    "aggregateFromKubeServiceEndpoints",
    "aggregationType",
}
SCALER_KEYS = {"redis": REDIS_KEYS, "metrics-api": METRICS_API_KEYS}
REQUIRED_KEYS = {"redis": {"listName"}, "metrics-api": {"url", "valueLocation", "targetValue"}}


class Trigger(Strict):
    type: str
    name: str | None = None
    metadata: dict[str, str]
    authentication_ref: AuthenticationRef | None = Field(default=None, alias="authenticationRef")
    metric_type: Literal["AverageValue", "Value", "Utilization"] | None = Field(
        default=None, alias="metricType"
    )
    use_cached_metrics: bool | None = Field(default=None, alias="useCachedMetrics")

    @model_validator(mode="after")
    def known_scaler_keys(self) -> Trigger:
        known = SCALER_KEYS.get(self.type)
        if known is None:
            raise ValueError(f"scaler {self.type!r} is not one these manifests are checked for")
        unknown = set(self.metadata) - known
        if unknown:
            raise ValueError(f"{self.type} scaler does not know {sorted(unknown)}")
        missing = REQUIRED_KEYS[self.type] - set(self.metadata)
        if missing:
            raise ValueError(f"{self.type} scaler needs {sorted(missing)}")
        # Without address/host in the metadata it must come from the authentication.
        no_address = not {"address", "host"} & set(self.metadata)
        if self.type == "redis" and no_address and self.authentication_ref is None:
            raise ValueError("redis scaler needs an address or an authenticationRef")
        return self


class ScalingPolicy(Strict):
    type: Literal["Pods", "Percent"]
    value: int = Field(gt=0)
    period_seconds: int = Field(alias="periodSeconds", gt=0, le=1800)


class ScalingRules(Strict):
    stabilization_window_seconds: int | None = Field(
        default=None, alias="stabilizationWindowSeconds", ge=0, le=3600
    )
    select_policy: Literal["Max", "Min", "Disabled"] | None = Field(
        default=None, alias="selectPolicy"
    )
    policies: list[ScalingPolicy] = []


class Behavior(Strict):
    scale_up: ScalingRules | None = Field(default=None, alias="scaleUp")
    scale_down: ScalingRules | None = Field(default=None, alias="scaleDown")


class HPAConfig(Strict):
    name: str | None = None
    behavior: Behavior | None = None


class Advanced(Strict):
    restore_to_original_replica_count: bool | None = Field(
        default=None, alias="restoreToOriginalReplicaCount"
    )
    horizontal_pod_autoscaler_config: HPAConfig | None = Field(
        default=None, alias="horizontalPodAutoscalerConfig"
    )
    scaling_modifiers: dict[str, Any] | None = Field(default=None, alias="scalingModifiers")


class Fallback(Strict):
    failure_threshold: int = Field(alias="failureThreshold", ge=1)
    replicas: int = Field(ge=0)


class ScaledObjectSpec(Strict):
    scale_target_ref: ScaleTargetRef = Field(alias="scaleTargetRef")
    polling_interval: int | None = Field(default=None, alias="pollingInterval", gt=0)
    cooldown_period: int | None = Field(default=None, alias="cooldownPeriod", ge=0)
    initial_cooldown_period: int | None = Field(default=None, alias="initialCooldownPeriod", ge=0)
    idle_replica_count: int | None = Field(default=None, alias="idleReplicaCount", ge=0)
    min_replica_count: int | None = Field(default=None, alias="minReplicaCount", ge=0)
    max_replica_count: int | None = Field(default=None, alias="maxReplicaCount", ge=1)
    fallback: Fallback | None = None
    advanced: Advanced | None = None
    triggers: list[Trigger] = Field(min_length=1)

    @model_validator(mode="after")
    def bounds_in_order(self) -> ScaledObjectSpec:
        low, high = self.min_replica_count or 0, self.max_replica_count or 100
        if low > high:
            raise ValueError(f"minReplicaCount {low} > maxReplicaCount {high}")
        return self


class ScaledObject(Strict):
    api_version: Literal["keda.sh/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["ScaledObject"]
    metadata: ObjectMeta
    spec: ScaledObjectSpec


class SecretTargetRef(Strict):
    parameter: str
    name: str
    key: str


class TriggerAuthenticationSpec(Strict):
    secret_target_ref: list[SecretTargetRef] = Field(alias="secretTargetRef", min_length=1)


class TriggerAuthentication(Strict):
    api_version: Literal["keda.sh/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["TriggerAuthentication"]
    metadata: ObjectMeta
    spec: TriggerAuthenticationSpec


KEDA_KINDS: dict[str, type[BaseModel]] = {
    "ScaledObject": ScaledObject,
    "TriggerAuthentication": TriggerAuthentication,
}
