"""Least privilege, checked against behaviour: which AWS APIs each function of template.yaml calls while the
tests run it, and whether that function's role, as the SAM transform expands the template, allows them.

Recording. While a test runs a function (the ``function(...)`` and ``websocket_function(...)`` fixtures of
tests/conftest.py), :meth:`CallRecorder.running` hands it AWS clients through ``bootstrap.use(aws=...)``:
the container's cached clients (the ones tests inject faults into), each with one botocore
``before-parameter-build`` hook. That event fires for every call the code attempts, before any
``before-call`` fault or stub can pre-empt it, and carries the call's parameters. A call is recorded as
(function logical id, IAM action, resource): the action mapped from the operation (``SendMessageBatch`` is
authorized as ``sqs:SendMessage``, every ``@connections`` operation as ``execute-api:ManageConnections``,
SES v2 signs as ``ses``); the resource where the call names one: the SQS queue ARN (from ``QueueUrl`` or
``QueueName``), the execute-api ARN ``<api>/<stage>/<METHOD>/@connections/<id>``, the SNS target ARN or the
phone number of an SMS.

Checking. :func:`role_policies` runs the SAM translator (aws-sam-translator) over template.yaml, resolves
each function's ``AWS::IAM::Role`` inline policies (and any ``AWS::IAM::Policy`` attached to the role) with
infra/template.py's resolver, and :func:`allows` evaluates them: Allow/Deny, Action/NotAction with IAM
wildcards (case-insensitive), Resource/NotResource (``*`` and ``?``, case-sensitive) when the call's resource
is known; a call whose resource is not known (SES identities, secrets) is matched on the action alone. A
statement with a Condition is evaluated only when every test in it is a ``StringEquals`` or ``StringLike``
on a condition key the call was recorded with (``s3:prefix``, from ``Prefix``); any other never allows (and
a Deny with a Condition always applies). The managed policies SAM attaches (basic execution, X-Ray, VPC
access, the SQS poller's) are not read; none of them grants what the code calls. Clients that do not come
from ``AwsClients`` (Powertools' secret providers) are not recorded.
"""

from __future__ import annotations

import copy
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlparse

from infra.template import ACCOUNT_ID, Context, Template, TemplateError, resolve
from shared import aws as shared_aws
from shared import bootstrap
from shared.aws import AwsClients

# Batch operations are authorized as the single operation (no separate IAM action exists).
_RENAMED_ACTIONS = {
    "sqs": {
        "SendMessageBatch": "SendMessage",
        "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
        "DeleteMessageBatch": "DeleteMessage",
    },
    "sns": {"PublishBatch": "Publish"},
    # DeleteObjects is authorized per key, as s3:DeleteObject; a listing of a bucket as s3:ListBucket
    "s3": {"DeleteObjects": "DeleteObject", "ListObjectsV2": "ListBucket"},
    "lambda": {"Invoke": "InvokeFunction"},
}
# Services whose requests are signed under another name than their IAM prefix (CloudWatch's is `monitoring`).
_SIGNING_PREFIXES = {"monitoring": "cloudwatch"}
# The API Gateway management API (@connections): one IAM action for every operation.
_MANAGE_CONNECTIONS = "execute-api:ManageConnections"
# A code-package location for the translator (SAM refuses a local CodeUri; `sam package` replaces it too).
_PACKAGED_CODE = "s3://switchboard-iam-check/code.zip"


def iam_action(signing_name: str, operation: str) -> str:
    """The IAM action that authorizes ``operation`` of the service whose requests are signed as
    ``signing_name`` (botocore's ``signingName``: ``ses`` for SES v2, ``execute-api`` for @connections)."""
    if signing_name == "execute-api":
        return _MANAGE_CONNECTIONS
    prefix = _SIGNING_PREFIXES.get(signing_name, signing_name)
    return f"{prefix}:{_RENAMED_ACTIONS.get(prefix, {}).get(operation, operation)}"


@dataclass(frozen=True, order=True)
class Call:
    """An AWS call a function made: who, as what IAM action, on what (None: not known), through which
    operation (``sqs.SendMessageBatch``)."""

    function: str
    action: str
    resource: str | None
    operation: str
    context: tuple[tuple[str, str], ...] = ()  # the condition keys the request carries, e.g. s3:prefix

    def __str__(self) -> str:
        on = f" on {self.resource}" if self.resource else ""
        return f"{self.function}: {self.action}{on} ({self.operation})"


def call_resource(client: Any, operation: str, params: Mapping[str, Any]) -> str | None:
    """The resource IAM authorizes ``operation`` on, where the call names one."""
    meta = client.meta
    service, region, partition = meta.service_model.service_name, meta.region_name, meta.partition
    if service == "sqs":
        if isinstance(params.get("QueueUrl"), str):
            account, name = urlparse(params["QueueUrl"]).path.strip("/").split("/")[-2:]
        elif isinstance(params.get("QueueName"), str):  # GetQueueUrl
            account, name = params.get("QueueOwnerAWSAccountId") or ACCOUNT_ID, params["QueueName"]
        else:
            return None
        return f"arn:{partition}:sqs:{region}:{account}:{name}"
    if service == "apigatewaymanagementapi":
        endpoint = urlparse(meta.endpoint_url)
        api_id, stage = (endpoint.hostname or "").split(".")[0], endpoint.path.strip("/")
        method = meta.service_model.operation_model(operation).http["method"]
        route = f"{api_id}/{stage}/{method}/@connections/{params.get('ConnectionId', '*')}"
        return f"arn:{partition}:execute-api:{region}:{ACCOUNT_ID}:{route}"
    if service == "s3" and isinstance(params.get("Bucket"), str):
        objects = (params.get("Delete") or {}).get("Objects") or [{"Key": params.get("Key")}]
        key = objects[0].get("Key")  # every key is under the one prefix the role names
        return f"arn:{partition}:s3:::{params['Bucket']}" + (f"/{key}" if isinstance(key, str) else "")
    if service == "kms" and isinstance(params.get("KeyId"), str) and params["KeyId"].startswith("arn:"):
        return str(params["KeyId"])
    if service == "sns":
        for name in ("TargetArn", "TopicArn", "PhoneNumber"):
            if isinstance(params.get(name), str):
                return str(params[name])
    return None


def call_context(client: Any, params: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The condition keys IAM sees on the call, where the tests need one (``s3:prefix`` of a listing)."""
    if client.meta.service_model.service_name == "s3" and isinstance(params.get("Prefix"), str):
        return (("s3:prefix", params["Prefix"]),)
    return ()


class CallRecorder:
    """The AWS calls functions make while the tests run them (one recorder for the session)."""

    def __init__(self) -> None:
        self.calls: set[Call] = set()
        self._function: str | None = None  # not thread-local: effects call AWS from pool threads
        self._lock = threading.Lock()

    @contextmanager
    def running(self, function: str) -> Iterator[None]:
        """Record the calls made until the block ends as ``function``'s, through AWS clients handed to it
        with ``bootstrap.use``; the engine in place (a test may have swapped it) stays."""
        with bootstrap.using_aws(AwsClients(make=self.make)):
            self._function = function
            try:
                yield
            finally:
                self._function = None

    def recording(self, function: str, invoke: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """``invoke`` (one call runs the function once), recorded as ``function``."""

        def invoke_recorded(event: Any) -> Any:
            with self.running(function):
                return invoke(event)

        return invoke_recorded

    def make(self, service: str, endpoint_url: str | None = None) -> Any:
        """``AwsClients.make``: the container's cached client, with the recording hook (once per client)."""
        client = shared_aws.client(service, endpoint_url)

        def record(params: Mapping[str, Any], model: Any, **_: Any) -> None:
            self._record(client, model.name, params)

        client.meta.events.register("before-parameter-build", record, unique_id="tests.iam.record")
        return client

    def _record(self, client: Any, operation: str, params: Mapping[str, Any]) -> None:
        function = self._function
        if function is None:  # the test itself, not a function
            return
        service_model = client.meta.service_model
        call = Call(
            function=function,
            action=iam_action(service_model.signing_name, operation),
            resource=call_resource(client, operation, params),
            operation=f"{service_model.service_name}.{operation}",
            context=call_context(client, params),
        )
        with self._lock:
            self.calls.add(call)

    def of(self, function: str) -> set[Call]:
        return {call for call in self.calls if call.function == function}


IAM_CALLS = CallRecorder()


# --- the roles, as SAM expands the template -----------------------------------------------------------


def sam_expand(template: Template, *, parameters: Mapping[str, str], region: str) -> dict[str, Any]:
    """template.yaml through the SAM transform, as CloudFormation would get it (after `sam package`)."""
    import boto3
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    raw = copy.deepcopy(template.raw)
    for resource in raw["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource.setdefault("Properties", {})["CodeUri"] = _PACKAGED_CODE
    session = boto3.session.Session(region_name=region)
    translator = Translator(managed_policy_map={}, sam_parser=Parser(), boto_session=session)
    expanded: dict[str, Any] = translator.translate(raw, parameter_values=dict(parameters))
    return expanded


@dataclass(frozen=True)
class Statement:
    """One statement of an identity policy, resolved."""

    sid: str | None
    effect: str
    actions: tuple[str, ...]
    not_actions: tuple[str, ...] | None
    resources: tuple[str, ...] | None
    not_resources: tuple[str, ...] | None
    conditional: bool
    # (operator, key, values) of each test of the Condition, when every one is a string test we evaluate
    conditions: tuple[tuple[str, str, tuple[str, ...]], ...] | None = None

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> Statement:
        def strings(key: str) -> tuple[str, ...] | None:
            if key not in raw:
                return None
            value = raw[key]
            values = value if isinstance(value, list) else [value]
            if not all(isinstance(v, str) for v in values):
                raise TemplateError(
                    f"{key} of statement {raw.get('Sid')!r} is not a string or list: {value!r}"
                )
            return tuple(values)

        resources, not_resources = strings("Resource"), strings("NotResource")
        if (resources is None) == (not_resources is None):
            raise TemplateError(f"statement {raw.get('Sid')!r} needs exactly one of Resource and NotResource")
        return cls(
            sid=raw.get("Sid"),
            effect=str(raw["Effect"]),
            actions=strings("Action") or (),
            not_actions=strings("NotAction"),
            resources=resources,
            not_resources=not_resources,
            conditional="Condition" in raw,
            conditions=_string_conditions(raw.get("Condition")),
        )

    def holds(self, context: Mapping[str, str]) -> bool:
        """Whether the Condition (if any) holds for a request carrying ``context``."""
        if not self.conditional:
            return True
        if self.conditions is None:
            return False
        for operator, key, values in self.conditions:
            if key not in context:
                return False
            like = operator == "StringLike"
            if not any(_wildcard(v, context[key]) if like else v == context[key] for v in values):
                return False
        return True

    def applies(self, action: str, resource: str | None) -> bool:
        """Whether this statement matches the request (a resource of None matches on the action alone)."""
        if self.not_actions is not None:
            if any(_wildcard(p, action, ignore_case=True) for p in self.not_actions):
                return False
        elif not any(_wildcard(p, action, ignore_case=True) for p in self.actions):
            return False
        if resource is None:
            return True
        if self.resources is not None:
            return any(_wildcard(p, resource) for p in self.resources)
        return not any(_wildcard(p, resource) for p in self.not_resources or ())


def _string_conditions(condition: Any) -> tuple[tuple[str, str, tuple[str, ...]], ...] | None:
    if not isinstance(condition, Mapping):
        return None
    tests: list[tuple[str, str, tuple[str, ...]]] = []
    for operator, keys in condition.items():
        if operator not in ("StringEquals", "StringLike") or not isinstance(keys, Mapping):
            return None
        for key, value in keys.items():
            values = value if isinstance(value, list) else [value]
            if not all(isinstance(v, str) for v in values):
                return None
            tests.append((operator, key, tuple(values)))
    return tuple(tests)


def _wildcard(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    """IAM matching: ``*`` any run of characters, ``?`` one character, everything else literal."""
    regex = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
    return re.fullmatch(regex, value, re.IGNORECASE if ignore_case else 0) is not None


def allows(
    statements: Iterable[Statement],
    action: str,
    resource: str | None,
    context: Iterable[tuple[str, str]] = (),
) -> bool:
    """An explicit Allow and no explicit Deny (conditional statements: see the module's docstring)."""
    keys = dict(context)
    allowed = False
    for statement in statements:
        if statement.effect == "Deny" and statement.applies(action, resource):
            return False
        allowed = allowed or (
            statement.effect == "Allow" and statement.holds(keys) and statement.applies(action, resource)
        )
    return allowed


def role_policies(expanded: Mapping[str, Any], ctx: Context) -> dict[str, list[Statement]]:
    """Function logical id -> the resolved statements of its role's inline policies and of the
    ``AWS::IAM::Policy`` resources attached to that role."""
    resources: Mapping[str, Any] = expanded["Resources"]
    ctx = replace(ctx, conditions=expanded.get("Conditions", {}))
    policies: dict[str, list[Statement]] = {}
    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::Lambda::Function":
            continue
        role = resource["Properties"].get("Role")
        target = role.get("Fn::GetAtt") if isinstance(role, dict) else None
        if not (isinstance(target, list) and len(target) == 2 and target[1] == "Arn"):
            raise TemplateError(f"{logical_id}'s role is not a role of this template: {role!r}")
        role_id = target[0]
        where: tuple[str, ...] = ("Resources", role_id, "Properties", "Policies")
        inline = resolve(resources[role_id]["Properties"].get("Policies", []), ctx, where)  # Fn::If dropped
        documents = [policy["PolicyDocument"] for policy in inline]
        for policy_id, other in resources.items():
            if other["Type"] == "AWS::IAM::Policy" and {"Ref": role_id} in other["Properties"].get(
                "Roles", []
            ):
                where = ("Resources", policy_id, "Properties", "PolicyDocument")
                documents.append(resolve(other["Properties"]["PolicyDocument"], ctx, where))
        statements = [Statement.of(raw) for document in documents for raw in document.get("Statement", [])]
        policies[logical_id] = statements
    return policies


def policy_context(
    template: Template,
    *,
    parameters: Mapping[str, str],
    api_id: str,
    region: str = "us-east-1",
    stack_name: str = "switchboard-local",
) -> Context:
    """What the policies resolve against: ``parameters``; each queue's ARN, URL and name as SQS (and moto)
    names them in ``region``; ``api_id`` for each API Gateway API (the tests' @connections endpoint); any key
    of the account for each KMS key (moto's key ids are random)."""
    ctx = template.context(stack_name=stack_name, region=region, parameters=parameters)
    refs: dict[str, Any] = {}
    attributes: dict[tuple[str, str], Any] = {}
    for spec in template.queue_specs(ctx).values():
        refs[spec.logical_id] = f"https://sqs.{region}.amazonaws.com/{ACCOUNT_ID}/{spec.name}"
        attributes[(spec.logical_id, "Arn")] = f"arn:aws:sqs:{region}:{ACCOUNT_ID}:{spec.name}"
        attributes[(spec.logical_id, "QueueName")] = spec.name
    for logical_id, resource in template.resources.items():
        if resource["Type"] == "AWS::ApiGatewayV2::Api":
            refs[logical_id] = attributes[(logical_id, "ApiId")] = api_id
        elif resource["Type"] == "AWS::KMS::Key":
            # moto gives each test's key a random id: any key of the account stands for the template's key
            # here; that the roles name EncryptionKey only is checked on the template (test_template.py).
            refs[logical_id] = "*"
            attributes[(logical_id, "Arn")] = f"arn:aws:kms:{region}:{ACCOUNT_ID}:key/*"
    return replace(ctx, refs=refs, attributes=attributes)


def not_allowed(calls: Iterable[Call], policies: Mapping[str, list[Statement]]) -> list[Call]:
    """The calls that their function's role does not allow, sorted."""
    return sorted(
        call
        for call in calls
        if not allows(policies.get(call.function, []), call.action, call.resource, call.context)
    )
