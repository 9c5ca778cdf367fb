"""The one reader of template.yaml (DESIGN section 1: "template.yaml is read, not restated").

Tests, the demo and the local stack derive queues, DLQs, event sources and function environments from
here. Pure Python + PyYAML; boto3 clients are passed in, never created at import time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

TEMPLATE_PATH: Path = Path(__file__).resolve().parent.parent / "template.yaml"
ACCOUNT_ID = "123456789012"
NO_VALUE: Any = type("NoValue", (), {"__repr__": lambda self: "AWS::NoValue"})()
_QUEUE_TYPE = "AWS::SQS::Queue"
_FUNCTION_TYPE = "AWS::Serverless::Function"
_API_TYPE = "AWS::ApiGatewayV2::Api"
_ROUTE_TYPE = "AWS::ApiGatewayV2::Route"
_INTEGRATION_TYPE = "AWS::ApiGatewayV2::Integration"
_AUTHORIZER_TYPE = "AWS::ApiGatewayV2::Authorizer"
# What `Ref <an API>` resolves to outside AWS (the local gateway uses the same id).
LOCAL_API_ID = "local"
_QUEUE_ATTRIBUTE_SKIP = {"QueueName", "RedrivePolicy", "Tags"}


class TemplateError(ValueError):
    """The template (or the values it is resolved against) cannot be interpreted."""


# --- loading: short-form tags become the long-form dicts CloudFormation itself uses --------------------


_CfnLoader: Any = type("_CfnLoader", (yaml.SafeLoader,), {})


def _construct_tag(loader: Any, suffix: str, node: Any) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix in ("Ref", "Condition"):
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _construct_tag)


def load_template(path: Path = TEMPLATE_PATH) -> Template:
    with path.open(encoding="utf-8") as stream:
        raw = yaml.load(stream, Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(raw, dict) or "Resources" not in raw:
        raise TemplateError(f"{path} is not a CloudFormation template")
    return Template(raw)


# --- resolving intrinsic functions -----------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    """What intrinsics resolve against. Plug new resource kinds in through `refs` and `attributes`."""

    parameters: Mapping[str, Any]
    pseudo: Mapping[str, Any]
    refs: Mapping[str, Any] = field(default_factory=dict)
    attributes: Mapping[tuple[str, str], Any] = field(default_factory=dict)
    conditions: Mapping[str, Any] = field(default_factory=dict)


def _ref(name: Any, ctx: Context) -> Any:
    for source in (ctx.pseudo, ctx.parameters, ctx.refs):
        if name in source:
            return source[name]
    raise TemplateError(f"cannot resolve Ref {name!r}: no value for that parameter or resource")


def _get_att(args: Any, ctx: Context) -> Any:
    logical_id, attribute = resolve(args, ctx)
    if (logical_id, attribute) not in ctx.attributes:
        raise TemplateError(f"cannot resolve Fn::GetAtt {logical_id}.{attribute}: not provisioned")
    return ctx.attributes[(logical_id, attribute)]


def _sub(args: Any, ctx: Context) -> str:
    text, variables = (args, {}) if isinstance(args, str) else (args[0], resolve(args[1], ctx))

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("!"):
            return "${" + name[1:] + "}"
        if name in variables:
            value = variables[name]
        elif "." in name and name not in ctx.pseudo:
            value = _get_att(name.split(".", 1), ctx)
        else:
            value = _ref(name, ctx)
        if value is NO_VALUE:
            raise TemplateError(f"Fn::Sub {text!r}: ${{{name}}} has no value")
        return str(value)

    return re.sub(r"\$\{([^}]+)\}", replace, text)


def _condition(name: Any, ctx: Context) -> bool:
    if name not in ctx.conditions:
        raise TemplateError(f"unknown condition {name!r}")
    return bool(resolve(ctx.conditions[name], ctx))


def _if(args: Any, ctx: Context) -> Any:
    name, when_true, when_false = args
    return resolve(when_true if _condition(name, ctx) else when_false, ctx)


def _split(args: Any, ctx: Context) -> list[str]:
    delimiter, source = resolve(args, ctx)
    return str(source).split(delimiter)


INTRINSICS: dict[str, Callable[[Any, Context], Any]] = {
    "Ref": _ref,
    "Condition": _condition,
    "Fn::GetAtt": _get_att,
    "Fn::Sub": _sub,
    "Fn::If": _if,
    "Fn::Join": lambda a, c: str(a[0]).join(str(v) for v in resolve(a[1], c)),
    "Fn::Equals": lambda a, c: resolve(a[0], c) == resolve(a[1], c),
    "Fn::Not": lambda a, c: not resolve(a[0], c),
    "Fn::And": lambda a, c: all(resolve(v, c) for v in a),
    "Fn::Or": lambda a, c: any(resolve(v, c) for v in a),
    "Fn::Select": lambda a, c: resolve(a[1], c)[int(resolve(a[0], c))],
    "Fn::Split": _split,
}


def resolve(value: Any, ctx: Context) -> Any:
    """Resolve intrinsics in `value`; containers drop entries that resolve to AWS::NoValue."""
    if isinstance(value, dict):
        if len(value) == 1:
            ((key, args),) = value.items()
            if key in INTRINSICS:
                return INTRINSICS[key](args, ctx)
        resolved = {k: resolve(v, ctx) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not NO_VALUE}
    if isinstance(value, list):
        return [item for item in (resolve(v, ctx) for v in value) if item is not NO_VALUE]
    return value


def _attribute_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _deep_merge(base: Any, override: Any) -> Any:
    """SAM Globals semantics: maps merge recursively, lists concatenate, anything else is replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        if any(k == "Ref" or k.startswith("Fn::") for k in [*base, *override]):
            return override
        return {**base, **{k: _deep_merge(base[k], v) if k in base else v for k, v in override.items()}}
    if isinstance(base, list) and isinstance(override, list):
        return base + override
    return override


# --- the topology ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueSpec:
    logical_id: str
    name: str
    fifo: bool
    attributes: dict[str, str]
    dead_letter_logical_id: str | None
    max_receive_count: int | None


@dataclass(frozen=True)
class EventSourceSpec:
    queue_logical_id: str
    batch_size: int
    batching_window_seconds: int
    function_response_types: tuple[str, ...]
    maximum_concurrency: int | None


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    handler: str
    module: str
    attribute: str
    timeout: int
    memory_size: int
    environment: dict[str, Any]
    sqs_events: tuple[EventSourceSpec, ...]
    policies: list[Any]


@dataclass(frozen=True)
class WebSocketApiSpec:
    """An ``AWS::ApiGatewayV2::Api`` with ``ProtocolType: WEBSOCKET``, its routes resolved to functions."""

    logical_id: str
    route_selection_expression: str
    # route key ($connect, $disconnect, $default, custom actions) -> the function its integration invokes
    routes: dict[str, FunctionSpec] = field(repr=False)
    # the REQUEST authorizer of the $connect route, and where it takes the identity from
    authorizer: FunctionSpec | None = field(repr=False)
    identity_sources: tuple[str, ...]


class Template:
    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw
        self.resources: dict[str, Any] = raw["Resources"]
        declared: dict[str, Any] = raw.get("Parameters", {})
        self.parameters = {name: str(spec["Default"]) for name, spec in declared.items() if "Default" in spec}
        self.required_parameters = sorted(set(declared) - set(self.parameters))
        self.queues = self.queue_specs(self.context())
        self.functions = {
            logical_id: self._function(logical_id, res["Properties"])
            for logical_id, res in self.resources.items()
            if res["Type"] == _FUNCTION_TYPE
        }

    def context(
        self,
        *,
        stack_name: str = "switchboard-local",
        region: str = "us-east-1",
        parameters: Mapping[str, str] | None = None,
        refs: Mapping[str, Any] | None = None,
        attributes: Mapping[tuple[str, str], Any] | None = None,
    ) -> Context:
        # A required parameter that is not supplied resolves to AWS::NoValue: what is bound to it is left out
        # (e.g. DB_SECRET_ARN on a local stack, where DATABASE_URL is used instead).
        values: dict[str, Any] = {name: NO_VALUE for name in self.required_parameters}
        values.update({**self.parameters, **(parameters or {})})
        for name, spec in self.raw.get("Parameters", {}).items():
            if values[name] is not NO_VALUE and spec.get("Type") == "CommaDelimitedList":
                values[name] = str(values[name]).split(",")
        pseudo = {
            "AWS::StackName": stack_name,
            "AWS::Region": region,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": NO_VALUE,
        }
        return Context(values, pseudo, refs or {}, attributes or {}, self.raw.get("Conditions", {}))

    def queue_specs(self, ctx: Context) -> dict[str, QueueSpec]:
        queues = {}
        for logical_id, res in self.resources.items():
            if res["Type"] != _QUEUE_TYPE:
                continue
            props = res.get("Properties", {})
            redrive = props.get("RedrivePolicy")
            attributes = {
                key: _attribute_string(resolve(value, ctx))
                for key, value in props.items()
                if key not in _QUEUE_ATTRIBUTE_SKIP
            }
            default_name = {"Fn::Sub": f"${{AWS::StackName}}-{logical_id}"}
            queues[logical_id] = QueueSpec(
                logical_id=logical_id,
                name=str(resolve(props.get("QueueName", default_name), ctx)),
                fifo=attributes.get("FifoQueue") == "true",
                attributes=attributes,
                dead_letter_logical_id=redrive["deadLetterTargetArn"]["Fn::GetAtt"][0] if redrive else None,
                max_receive_count=int(resolve(redrive["maxReceiveCount"], ctx)) if redrive else None,
            )
        return queues

    @property
    def dead_letter_queue_ids(self) -> set[str]:
        return {q.dead_letter_logical_id for q in self.queues.values() if q.dead_letter_logical_id}

    @property
    def main_queues(self) -> dict[str, QueueSpec]:
        return {k: q for k, q in self.queues.items() if k not in self.dead_letter_queue_ids}

    @staticmethod
    def queue_logical_id(job_type: str) -> str:
        return "".join(part.capitalize() for part in job_type.split("-")) + "Queue"

    # --- the WebSocket API ------------------------------------------------------------------------------

    @cached_property
    def websocket_apis(self) -> dict[str, WebSocketApiSpec]:
        """Every WebSocket API of the template, by logical id."""
        return {
            logical_id: self._websocket_api(logical_id, res.get("Properties", {}))
            for logical_id, res in self.resources.items()
            if res["Type"] == _API_TYPE and res.get("Properties", {}).get("ProtocolType") == "WEBSOCKET"
        }

    @property
    def websocket_api(self) -> WebSocketApiSpec | None:
        """The template's WebSocket API (None without one; a template with two is an error here)."""
        if len(self.websocket_apis) > 1:
            raise TemplateError(f"more than one WebSocket API: {sorted(self.websocket_apis)}")
        return next(iter(self.websocket_apis.values()), None)

    @property
    def websocket_routes(self) -> dict[str, FunctionSpec]:
        """Route key -> the function its integration invokes (empty without a WebSocket API)."""
        api = self.websocket_api
        return dict(api.routes) if api else {}

    @property
    def websocket_authorizer(self) -> FunctionSpec | None:
        """The Lambda REQUEST authorizer of the ``$connect`` route, if it has one."""
        api = self.websocket_api
        return api.authorizer if api else None

    def _websocket_api(self, api_id: str, props: dict[str, Any]) -> WebSocketApiSpec:
        routes: dict[str, FunctionSpec] = {}
        authorizer: FunctionSpec | None = None
        identity: tuple[str, ...] = ()
        for route_id, res in self.resources.items():
            route = res.get("Properties", {})
            if res["Type"] != _ROUTE_TYPE or _references(route.get("ApiId")) != {api_id}:
                continue
            key = route.get("RouteKey")
            if not isinstance(key, str) or key in routes:
                raise TemplateError(f"{route_id}: RouteKey must be a unique string, got {key!r}")
            integration_id = self._referenced(route.get("Target"), _INTEGRATION_TYPE, f"{route_id}.Target")
            integration = self.resources[integration_id].get("Properties", {})
            if integration.get("IntegrationType") != "AWS_PROXY":
                raise TemplateError(f"{integration_id}: only AWS_PROXY (Lambda) integrations are supported")
            routes[key] = self._function_named(integration.get("IntegrationUri"), integration_id)
            if "AuthorizerId" in route:
                if key != "$connect":
                    raise TemplateError(f"{route_id}: WebSocket authorizers apply to $connect only")
                authorizer_id = self._referenced(route["AuthorizerId"], _AUTHORIZER_TYPE, route_id)
                spec = self.resources[authorizer_id].get("Properties", {})
                authorizer = self._function_named(spec.get("AuthorizerUri"), authorizer_id)
                identity = tuple(spec.get("IdentitySource") or ())
        return WebSocketApiSpec(
            logical_id=api_id,
            route_selection_expression=str(props.get("RouteSelectionExpression", "")),
            routes=routes,
            authorizer=authorizer,
            identity_sources=identity,
        )

    def _referenced(self, value: Any, resource_type: str, where: str) -> str:
        """The one resource of ``resource_type`` that ``value`` refers to (Ref, GetAtt or Sub)."""
        found = [r for r in _references(value) if self.resources.get(r, {}).get("Type") == resource_type]
        if len(found) != 1:
            raise TemplateError(f"{where} must refer to exactly one {resource_type}, found {found}")
        return found[0]

    def _function_named(self, uri: Any, where: str) -> FunctionSpec:
        return self.functions[self._referenced(uri, _FUNCTION_TYPE, where)]

    def function_for_queue(self, logical_id: str) -> FunctionSpec | None:
        for function in self.functions.values():
            if any(event.queue_logical_id == logical_id for event in function.sqs_events):
                return function
        return None

    def _function(self, logical_id: str, props: dict[str, Any]) -> FunctionSpec:
        merged = _deep_merge(self.raw.get("Globals", {}).get("Function", {}), props)
        ctx = self.context()
        module_path, _, attribute = merged["Handler"].rpartition(".")
        events = tuple(
            _event_source(event.get("Properties", {}), ctx)
            for event in merged.get("Events", {}).values()
            if event.get("Type") == "SQS"
        )
        return FunctionSpec(
            logical_id=logical_id,
            handler=merged["Handler"],
            module=module_path.replace("/", "."),
            attribute=attribute,
            timeout=int(resolve(merged.get("Timeout", 3), ctx)),
            memory_size=int(resolve(merged.get("MemorySize", 128), ctx)),
            environment=dict(merged.get("Environment", {}).get("Variables", {})),
            sqs_events=events,
            policies=list(merged.get("Policies", [])),
        )


def _references(value: Any) -> set[str]:
    """Logical ids (and parameters) that ``value`` refers to through Ref, Fn::GetAtt or Fn::Sub."""
    if isinstance(value, list):
        return set().union(*(_references(v) for v in value)) if value else set()
    if not isinstance(value, dict):
        return set()
    if len(value) == 1:
        ((key, args),) = value.items()
        if key == "Ref" and isinstance(args, str):
            return {args}
        if key == "Fn::GetAtt":
            return {args[0]} if isinstance(args, list) else {str(args).split(".", 1)[0]}
        if key == "Fn::Sub":
            text, variables = (args, {}) if isinstance(args, str) else (args[0], args[1])
            names = {m.split(".", 1)[0] for m in re.findall(r"\$\{([^!}][^}]*)\}", text)}
            return {n for n in names - set(variables) if not n.startswith("AWS::")} | _references(variables)
    return set().union(*(_references(v) for v in value.values()))


def _event_source(raw: dict[str, Any], ctx: Context) -> EventSourceSpec:
    queue = raw["Queue"]  # left unresolved: it names the queue resource, which has no ARN until provisioned
    props = resolve({k: v for k, v in raw.items() if k != "Queue"}, ctx)
    concurrency = props.get("ScalingConfig", {}).get("MaximumConcurrency")
    return EventSourceSpec(
        queue_logical_id=queue["Fn::GetAtt"][0] if isinstance(queue, dict) else queue,
        batch_size=int(props.get("BatchSize", 10)),
        batching_window_seconds=int(props.get("MaximumBatchingWindowInSeconds", 0)),
        function_response_types=tuple(props.get("FunctionResponseTypes", ())),
        maximum_concurrency=int(concurrency) if concurrency is not None else None,
    )


# --- provisioning (moto in-process, a moto server, or any SQS endpoint) -------------------------------


@dataclass
class Stack:
    template: Template = field(repr=False)
    stack_name: str
    region: str
    parameters: dict[str, str]
    queue_urls: dict[str, str] = field(default_factory=dict)
    queue_arns: dict[str, str] = field(default_factory=dict)
    refs: dict[str, Any] = field(default_factory=dict, repr=False)
    attributes: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)

    def context(self) -> Context:
        return self.template.context(
            stack_name=self.stack_name,
            region=self.region,
            parameters=self.parameters,
            refs=self.refs,
            attributes=self.attributes,
        )

    def add_queue(self, spec: QueueSpec, url: str, arn: str) -> None:
        self.queue_urls[spec.logical_id] = url
        self.queue_arns[spec.logical_id] = arn
        self.refs[spec.logical_id] = url
        self.attributes.update(
            {
                (spec.logical_id, "Arn"): arn,
                (spec.logical_id, "QueueUrl"): url,
                (spec.logical_id, "QueueName"): spec.name,
            }
        )

    def add_api(self, logical_id: str, api_id: str) -> None:
        """Make ``Ref <logical_id>`` (and its ApiId / ApiEndpoint attributes) resolve to ``api_id``."""
        protocol = self.template.resources[logical_id].get("Properties", {}).get("ProtocolType", "HTTP")
        scheme = "wss" if protocol == "WEBSOCKET" else "https"
        self.refs[logical_id] = api_id
        self.attributes.update(
            {
                (logical_id, "ApiId"): api_id,
                (logical_id, "ApiEndpoint"): f"{scheme}://{api_id}.execute-api.{self.region}.amazonaws.com",
            }
        )

    def job_queue(self, job_type: str) -> tuple[str, str]:
        """(queue URL, dead-letter queue URL) for a job type, e.g. "send-message"."""
        logical_id = self.template.queue_logical_id(job_type)
        spec = self.template.queues.get(logical_id)
        if spec is None or spec.dead_letter_logical_id is None:
            raise KeyError(f"no queue with a dead-letter queue for job type {job_type!r} ({logical_id})")
        return self.queue_urls[logical_id], self.queue_urls[spec.dead_letter_logical_id]

    def function_environment(self, fn: FunctionSpec, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The function's environment as Lambda would see it; `extra` entries are added last, unresolved."""
        variables = resolve(fn.environment, self.context())
        return {**{k: _attribute_string(v) for k, v in variables.items()}, **(extra or {})}


def provision(
    template: Template,
    *,
    sqs_client: Any,
    stack_name: str = "switchboard-local",
    parameters: dict[str, str] | None = None,
    api_ids: Mapping[str, str] | None = None,
) -> Stack:
    """Create every queue of the template: dead-letter queues first, then the queues that redrive to them.

    API Gateway APIs are not created (the local gateway stands in for them): ``Ref`` to one resolves to its
    id in ``api_ids``, by default ``LOCAL_API_ID``, so every function's environment resolves."""
    stack = Stack(template, stack_name, sqs_client.meta.region_name, dict(parameters or {}))
    for logical_id, resource in template.resources.items():
        if resource["Type"] == _API_TYPE:
            stack.add_api(logical_id, (api_ids or {}).get(logical_id, LOCAL_API_ID))
    specs = template.queue_specs(stack.context())
    ordered = sorted(specs.values(), key=lambda spec: spec.dead_letter_logical_id is not None)
    for spec in ordered:
        attributes = dict(spec.attributes)
        if spec.dead_letter_logical_id is not None:
            attributes["RedrivePolicy"] = json.dumps(
                {
                    "deadLetterTargetArn": stack.queue_arns[spec.dead_letter_logical_id],
                    "maxReceiveCount": spec.max_receive_count,
                }
            )
        url = sqs_client.create_queue(QueueName=spec.name, Attributes=attributes)["QueueUrl"]
        arn = sqs_client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
        stack.add_queue(spec, url, arn["QueueArn"])
    return stack
