"""The one reader of template.yaml (DESIGN section 1: "template.yaml is read, not restated").

Tests, the demo and the local stack derive queues, DLQs, event sources and function environments from
here. Pure Python + PyYAML; boto3 clients are passed in, never created at import time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TEMPLATE_PATH: Path = Path(__file__).resolve().parent.parent / "template.yaml"
ACCOUNT_ID = "123456789012"
NO_VALUE: Any = type("NoValue", (), {"__repr__": lambda self: "AWS::NoValue"})()
_QUEUE_TYPE = "AWS::SQS::Queue"
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
            if res["Type"] == "AWS::Serverless::Function"
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
) -> Stack:
    """Create every queue of the template: dead-letter queues first, then the queues that redrive to them."""
    stack = Stack(template, stack_name, sqs_client.meta.region_name, dict(parameters or {}))
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
