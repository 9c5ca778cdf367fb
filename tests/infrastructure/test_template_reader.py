"""infra/template.py as a reader: template.yaml read through cfn-lint's decoder, every intrinsic the local
stack supports resolving as it always has, and everything else failing loudly, with where it is."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from infra.template import (
    NO_VALUE,
    TEMPLATE_PATH,
    Context,
    Template,
    TemplateError,
    UnsupportedIntrinsicError,
    load_template,
    provision,
    resolve,
)

SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:switchboard-db"
REQUIRED = {"DatabaseSecretArn": SECRET_ARN, "JwtIssuer": "issuer", "JwtAudience": "audience"}


@pytest.fixture
def sqs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield boto3.client("sqs", region_name="us-east-1")


def write(tmp_path: Path, text: str, name: str = "template.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def plain_types(value: Any) -> Iterator[type]:
    yield type(value)
    if isinstance(value, dict):
        for key, item in value.items():
            yield type(key)
            yield from plain_types(item)
    elif isinstance(value, list):
        for item in value:
            yield from plain_types(item)


# --- the real template ----------------------------------------------------------------------------------


def test_the_real_template_loads_as_plain_python_values() -> None:
    template = load_template()
    # cfn-lint's dict_node/list_node/str_node are converted: callers compare, copy and dump plain values
    assert set(plain_types(template.raw)) <= {dict, list, str, int, float, bool, type(None)}
    assert template.resources["SendMessageQueue"]["Properties"]["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": ["SendMessageDLQ", "Arn"]
    }


def test_the_real_template_resolves_every_queue_and_function_environment(sqs: Any) -> None:
    template = load_template(TEMPLATE_PATH)
    stack = provision(template, sqs_client=sqs, parameters=REQUIRED)
    assert set(stack.queue_urls) == set(template.queues) and len(template.queues) == 14
    for fn in template.functions.values():
        environment = stack.function_environment(fn)
        assert all(isinstance(value, str) for value in environment.values()), fn.logical_id
        assert not any("Fn::" in value or '"Ref"' in value for value in environment.values()), fn.logical_id
    send = stack.function_environment(template.functions["SendMessageFunction"])
    assert send["DB_SECRET_ARN"] == SECRET_ARN
    assert send["INDEXING_QUEUE_URL"] == stack.queue_urls["IndexingQueue"]


def test_a_missing_file_is_still_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_template(tmp_path / "nothing.yaml")


# --- supported intrinsics resolve as before --------------------------------------------------------------

SUPPORTED = """
Parameters:
  Name: {Type: String, Default: jobs}
  Zones: {Type: CommaDelimitedList, Default: "a,b"}
  Empty: {Type: String, Default: ""}
Mappings:
  Sizes:
    small: {Memory: 128, Zones: [x, y]}
Conditions:
  IsJobs: !Equals [!Ref Name, jobs]
  HasEmpty: !Not [!Equals [!Ref Empty, ""]]
  Both: !And [!Condition IsJobs, !Condition HasEmpty]
  Either: !Or [!Condition IsJobs, !Condition HasEmpty]
Resources:
  Queue:
    Type: AWS::SQS::Queue
  Thing:
    Type: AWS::Test::Thing
    Properties:
      RefParameter: !Ref Name
      RefPseudo: !Ref AWS::Region
      RefResource: !Ref Queue
      RefList: !Ref Zones
      GetAttDotted: !GetAtt Queue.Arn
      GetAttList: !GetAtt [Queue, QueueName]
      Sub: !Sub "${AWS::StackName}-${Name}-${Queue.QueueName}-${!Literal}"
      SubVariables: !Sub ["${A}/${B}", {A: !Ref Name, B: !Select [1, !Ref Zones]}]
      Join: !Join [",", [a, !Ref Name, 3]]
      Select: !Select ["1", [p, q, r]]
      Split: !Split ["/", "a/b/c"]
      Equals: !Equals [!Ref Name, jobs]
      Not: !Not [!Equals [!Ref Name, jobs]]
      And: !And [!Condition IsJobs, !Condition HasEmpty]
      Or: !Or [!Condition IsJobs, !Condition HasEmpty]
      Condition: {Condition: Either}
      IfTrue: !If [IsJobs, when-true, when-false]
      IfFalse: !If [HasEmpty, when-true, when-false]
      IfNoValue: !If [HasEmpty, when-true, !Ref AWS::NoValue]
      ListDropsNoValue: [a, !If [Both, b, !Ref AWS::NoValue], c]
      MapDropsNoValue: {Kept: 1, Dropped: !Ref AWS::NoValue}
      FindInMap: !FindInMap [Sizes, small, Memory]
      FindInMapList: !FindInMap [Sizes, !Sub "sm${Empty}all", Zones]
      FindInMapDefault: !FindInMap [Sizes, large, Memory, {DefaultValue: 1024}]
"""

EXPECTED = {
    "RefParameter": "jobs",
    "RefPseudo": "eu-west-1",
    "RefResource": "https://queue.local/q",
    "RefList": ["a", "b"],
    "GetAttDotted": "arn:aws:sqs:eu-west-1:123456789012:q",
    "GetAttList": "q",
    "Sub": "stack-jobs-q-${Literal}",
    "SubVariables": "jobs/b",
    "Join": "a,jobs,3",
    "Select": "q",
    "Split": ["a", "b", "c"],
    "Equals": True,
    "Not": False,
    "And": False,
    "Or": True,
    "Condition": True,
    "IfTrue": "when-true",
    "IfFalse": "when-false",
    "ListDropsNoValue": ["a", "c"],
    "MapDropsNoValue": {"Kept": 1},
    "FindInMap": 128,
    "FindInMapList": ["x", "y"],
    "FindInMapDefault": 1024,
}


@pytest.fixture
def supported(tmp_path: Path) -> tuple[Template, Context]:
    template = load_template(write(tmp_path, SUPPORTED))
    ctx = template.context(
        stack_name="stack",
        region="eu-west-1",
        refs={"Queue": "https://queue.local/q"},
        attributes={
            ("Queue", "Arn"): "arn:aws:sqs:eu-west-1:123456789012:q",
            ("Queue", "QueueName"): "q",
        },
    )
    return template, ctx


def test_short_forms_load_as_the_long_form_cloudformation_uses(supported: tuple[Template, Context]) -> None:
    props = supported[0].resources["Thing"]["Properties"]
    assert props["GetAttDotted"] == {"Fn::GetAtt": ["Queue", "Arn"]}
    assert props["GetAttList"] == {"Fn::GetAtt": ["Queue", "QueueName"]}
    assert props["SubVariables"] == {
        "Fn::Sub": ["${A}/${B}", {"A": {"Ref": "Name"}, "B": {"Fn::Select": [1, {"Ref": "Zones"}]}}]
    }
    assert props["And"] == {"Fn::And": [{"Condition": "IsJobs"}, {"Condition": "HasEmpty"}]}
    assert props["FindInMapDefault"] == {
        "Fn::FindInMap": ["Sizes", "large", "Memory", {"DefaultValue": 1024}]
    }


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_supported_intrinsic_resolves(supported: tuple[Template, Context], name: str) -> None:
    template, ctx = supported
    value = template.resources["Thing"]["Properties"][name]
    assert resolve(value, ctx) == EXPECTED[name]


def test_a_property_that_resolves_to_no_value_is_no_value(supported: tuple[Template, Context]) -> None:
    template, ctx = supported
    assert resolve(template.resources["Thing"]["Properties"]["IfNoValue"], ctx) is NO_VALUE
    resolved = resolve(template.resources["Thing"]["Properties"], ctx)
    assert "IfNoValue" not in resolved
    assert resolved == EXPECTED


def test_a_mapping_entry_that_is_missing_names_itself(supported: tuple[Template, Context]) -> None:
    _, ctx = supported
    with pytest.raises(TemplateError, match="Fn::FindInMap: Mappings has no Sizes/large/Memory"):
        resolve({"Fn::FindInMap": ["Sizes", "large", "Memory"]}, ctx, ("Resources", "X", "Properties", "M"))


def test_find_in_map_sets_queue_attributes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "Mappings:\n"
        "  Retention: {standard: {Seconds: 345600}}\n"
        "Resources:\n"
        "  Q:\n"
        "    Type: AWS::SQS::Queue\n"
        "    Properties:\n"
        "      MessageRetentionPeriod: !FindInMap [Retention, standard, Seconds]\n",
    )
    assert load_template(path).queues["Q"].attributes == {"MessageRetentionPeriod": "345600"}


# --- what the local stack cannot resolve fails loudly, saying what and where -------------------------------


@pytest.mark.parametrize(
    ("yaml_value", "intrinsic"),
    [
        ('!GetAZs ""', "Fn::GetAZs"),
        ("!ImportValue shared-delay", "Fn::ImportValue"),
        ("!Cidr [10.0.0.0/16, 2, 8]", "Fn::Cidr"),
        ("!Base64 text", "Fn::Base64"),
        ("!Length [a, b]", "Fn::Length"),
        ("{Fn::NoSuchFunction: [a]}", "Fn::NoSuchFunction"),
        ('{Fn::Transform: {Name: "AWS::Include", Parameters: {Location: s3://b/k}}}', "Fn::Transform"),
    ],
)
def test_an_unsupported_intrinsic_in_a_queue_names_itself_the_resource_and_the_property(
    tmp_path: Path, yaml_value: str, intrinsic: str
) -> None:
    path = write(
        tmp_path,
        "Resources:\n  JobsQueue:\n    Type: AWS::SQS::Queue\n    Properties:\n"
        f"      DelaySeconds: {yaml_value}\n",
    )
    with pytest.raises(UnsupportedIntrinsicError) as raised:
        load_template(path)
    error = raised.value
    assert error.intrinsic == intrinsic
    assert error.logical_id == "JobsQueue"
    assert error.path == ("Resources", "JobsQueue", "Properties", "DelaySeconds")
    assert str(error).startswith(
        f"Resources/JobsQueue/Properties/DelaySeconds: the local stack cannot resolve {intrinsic}"
    )


def test_a_nested_unsupported_intrinsic_is_located_through_the_intrinsics_around_it(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "Resources:\n"
        "  Q:\n"
        "    Type: AWS::SQS::Queue\n"
        "    Properties:\n"
        "      Tags:\n"
        "        - Key: zone\n"
        "          Value: x\n"
        "      KmsMasterKeyId: !Join ['', [key-, !Select [0, !GetAZs '']]]\n",
    )
    with pytest.raises(UnsupportedIntrinsicError, match="Fn::GetAZs") as raised:
        load_template(path)
    assert raised.value.path == (
        "Resources",
        "Q",
        "Properties",
        "KmsMasterKeyId",
        "Fn::Join",
        1,
        "Fn::Select",
    )
    assert "lists the Availability Zones" in str(raised.value)


def test_an_unsupported_intrinsic_in_a_function_environment_fails_when_it_is_resolved(
    tmp_path: Path, sqs: Any
) -> None:
    path = write(
        tmp_path,
        "Resources:\n"
        "  Worker:\n"
        "    Type: AWS::Serverless::Function\n"
        "    Properties:\n"
        "      Handler: handlers/x.lambda_handler\n"
        "      Environment:\n"
        "        Variables:\n"
        "          PLAIN: value\n"
        "          SHARED_TOPIC: !ImportValue shared-stack-TopicArn\n",
    )
    template = load_template(path)  # the environment is resolved by the stack that runs the function
    stack = provision(template, sqs_client=sqs)
    with pytest.raises(UnsupportedIntrinsicError) as raised:
        stack.function_environment(template.functions["Worker"])
    assert str(raised.value) == (
        "Resources/Worker/Properties/Environment/Variables/SHARED_TOPIC: the local stack cannot resolve "
        "Fn::ImportValue: it reads an export of another deployed stack"
    )


def test_an_unsupported_intrinsic_in_a_condition_names_the_condition(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "Conditions:\n"
        "  InFirstZone: !Equals [!Select [0, !GetAZs ''], us-east-1a]\n"
        "Resources:\n"
        "  Q:\n"
        "    Type: AWS::SQS::Queue\n"
        "    Properties:\n"
        "      DelaySeconds: !If [InFirstZone, 5, 0]\n",
    )
    with pytest.raises(UnsupportedIntrinsicError, match="Fn::GetAZs") as raised:
        load_template(path)
    assert raised.value.logical_id == "Q"
    assert raised.value.path[:6] == ("Resources", "Q", "Properties", "DelaySeconds", "Fn::If", "Conditions")
    assert "InFirstZone" in str(raised.value)


def test_for_each_is_not_expanded_and_says_so(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "Transform: AWS::LanguageExtensions\n"
        "Resources:\n"
        "  Fn::ForEach::Queues:\n"
        "    - Name\n"
        "    - [A, B]\n"
        "    - ${Name}Queue:\n"
        "        Type: AWS::SQS::Queue\n",
    )
    with pytest.raises(
        UnsupportedIntrinsicError, match=r"^Resources: .*Fn::ForEach::Queues.*LanguageExtensions"
    ):
        load_template(path)


def test_an_intrinsic_key_beside_properties_is_not_taken_for_a_property(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "Resources:\n"
        "  Q:\n"
        "    Type: AWS::SQS::Queue\n"
        "    Properties:\n"
        "      RedriveAllowPolicy:\n"
        "        redrivePermission: byQueue\n"
        "        Fn::ForEach::Sources: [S, [a], {x: y}]\n",
    )
    with pytest.raises(UnsupportedIntrinsicError, match="Fn::ForEach::Sources") as raised:
        load_template(path)
    assert raised.value.path == ("Resources", "Q", "Properties", "RedriveAllowPolicy")


def test_resolve_on_its_own_raises_for_unsupported_intrinsics() -> None:
    ctx = Context(parameters={}, pseudo={})
    with pytest.raises(
        UnsupportedIntrinsicError, match=r"^Fn::Select: the local stack cannot resolve Fn::GetAZs"
    ):
        resolve({"Fn::Select": [0, {"Fn::GetAZs": ""}]}, ctx)
    with pytest.raises(UnsupportedIntrinsicError, match=r"^Resources/R/Properties/P/0/Fn::Select: "):
        resolve([{"Fn::Select": [0, {"Fn::GetAZs": ""}]}], ctx, ("Resources", "R", "Properties", "P"))


def test_known_errors_are_located_too(supported: tuple[Template, Context]) -> None:
    _, ctx = supported
    where = ("Resources", "Thing", "Properties", "P")
    with pytest.raises(TemplateError, match=r"^Resources/Thing/Properties/P/Ref: cannot resolve Ref 'Nope'"):
        resolve({"Ref": "Nope"}, ctx, where)
    with pytest.raises(TemplateError, match=r"^Resources/Thing/Properties/P/Fn::Select: cannot apply to"):
        resolve({"Fn::Select": [5, ["a"]]}, ctx, where)
    with pytest.raises(TemplateError, match=r"/Fn::If: cannot apply to"):
        resolve({"Fn::If": ["IsJobs", "a"]}, ctx, where)
    with pytest.raises(TemplateError, match="unknown condition 'Nope'"):
        resolve({"Fn::If": ["Nope", "a", "b"]}, ctx, where)


def test_an_event_source_queue_must_be_a_get_att(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "Resources:\n"
        "  Worker:\n"
        "    Type: AWS::Serverless::Function\n"
        "    Properties:\n"
        "      Handler: handlers/x.lambda_handler\n"
        "      Events:\n"
        "        Jobs:\n"
        "          Type: SQS\n"
        "          Properties:\n"
        "            Queue: !ImportValue shared-QueueArn\n",
    )
    with pytest.raises(TemplateError, match=r"^Resources/Worker/Properties/Events/Jobs/Properties/Queue: "):
        load_template(path)


# --- malformed files -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Resources:\n  Q:\n    Type: AWS::SQS::Queue\n   Properties: {}\n", "cannot be parsed: line 4"),
        ("Resources:\n  Q: {Type: [unclosed\n", "cannot be parsed"),
        (
            "Resources:\n  Q:\n    Type: AWS::SQS::Queue\n  Q:\n    Type: AWS::SQS::Queue\n",
            "Duplicate found 'Q'",
        ),
        ("Resources:\n  Q:\n    Type: !Ref\n      - [a\n", "cannot be parsed"),
        ('{\n\t"Resources": {"Q": {"Type": "AWS::SQS::Queue"}\n}\n', "cannot be parsed"),
        ("- just\n- a list\n", "not a CloudFormation template"),
        ("", "not a CloudFormation template"),
        ("Resources:\n  Q:\n    Properties: {}\n", "Resources/Q: a resource must be a mapping with a Type"),
        ("Resources: [a]\n", "Resources must be a mapping"),
    ],
)
def test_a_malformed_file_is_a_template_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        load_template(write(tmp_path, text))


def test_a_file_that_is_not_utf8_is_a_template_error(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_bytes(b"Resources:\n  Q:\n    Type: \xff\xfe\n")
    with pytest.raises(TemplateError, match="not UTF-8"):
        load_template(path)


def test_a_json_template_loads(tmp_path: Path) -> None:
    raw = {
        "Resources": {
            "Q": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": {"Fn::Sub": "${AWS::StackName}-q"}}}
        }
    }
    template = load_template(write(tmp_path, json.dumps(raw, indent="\t"), "template.json"))
    assert template.raw == raw
    assert template.queues["Q"].name == "switchboard-local-q"
