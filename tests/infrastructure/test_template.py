"""template.yaml, checked through infra/template.py (its one reader): the queues of docs/contracts.md §1,
least-privilege IAM, alarms, and provisioning against moto. No network, no database."""

from __future__ import annotations

import ast
import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from infra.template import (
    NO_VALUE,
    TEMPLATE_PATH,
    Stack,
    Template,
    TemplateError,
    load_template,
    provision,
    resolve,
)
from shared.jobs import JOB_KINDS

ROOT = TEMPLATE_PATH.parent
JOB_TYPES = (
    "send-message",
    "delivery-confirmation",
    "encryption",
    "indexing",
    "batch-message",
    "cleanup",
    "notification",
)
FIFO_JOB_TYPES = {"send-message"}
SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:switchboard-db"


@pytest.fixture(scope="module")
def template() -> Template:
    return load_template()


@pytest.fixture
def sqs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield boto3.client("sqs", region_name="us-east-1")


def resources_of_type(template: Template, resource_type: str) -> dict[str, dict[str, Any]]:
    return {k: r.get("Properties", {}) for k, r in template.resources.items() if r["Type"] == resource_type}


def policy_documents(policy: Any) -> list[dict[str, Any]]:
    """A function's policy entry as documents: both branches of a conditional (``Fn::If``) policy."""
    if isinstance(policy, dict) and "Fn::If" in policy:
        return [document for branch in policy["Fn::If"][1:] for document in policy_documents(branch)]
    return [policy] if isinstance(policy, dict) and "Statement" in policy else []


def policy_statements(template: Template) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every inline IAM statement: function Policies documents and AWS::IAM::* resources."""
    for fn in template.functions.values():
        for policy in fn.policies:
            for document in policy_documents(policy):
                for statement in document.get("Statement", []):
                    yield fn.logical_id, statement
    for logical_id, resource in template.resources.items():
        if resource["Type"].startswith("AWS::IAM::"):
            props = resource.get("Properties", {})
            documents = [props.get("PolicyDocument", {})]
            documents += [p.get("PolicyDocument", {}) for p in props.get("Policies", [])]
            for document in documents:
                for statement in document.get("Statement", []):
                    yield logical_id, statement


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# --- the template as a whole ----------------------------------------------------------------------------


def test_template_is_clean_under_cfn_lint() -> None:
    from cfnlint.api import lint_file

    findings = lint_file(TEMPLATE_PATH)
    assert findings == [], "\n".join(str(finding) for finding in findings)


def test_short_form_tags_load_as_long_form_intrinsics(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        "Resources:\n"
        "  X:\n"
        "    Type: AWS::Test::Thing\n"
        "    Properties:\n"
        "      A: !GetAtt Q.Arn\n"
        "      B: !GetAtt [Q, QueueName]\n"
        "      C: !Sub ['${N}-x', {N: !Ref AWS::StackName}]\n"
        "      D: !If [Cond, !Join [',', !Split [',', 'a,b']], !Ref AWS::NoValue]\n"
        "      E: !And [!Condition Cond, !Not [!Equals [!Select [0, [1, 2]], 1]]]\n",
        encoding="utf-8",
    )
    props = load_template(path).resources["X"]["Properties"]
    assert props["A"] == {"Fn::GetAtt": ["Q", "Arn"]}
    assert props["B"] == {"Fn::GetAtt": ["Q", "QueueName"]}
    assert props["C"] == {"Fn::Sub": ["${N}-x", {"N": {"Ref": "AWS::StackName"}}]}
    assert props["D"] == {
        "Fn::If": ["Cond", {"Fn::Join": [",", {"Fn::Split": [",", "a,b"]}]}, {"Ref": "AWS::NoValue"}]
    }
    assert props["E"] == {
        "Fn::And": [{"Condition": "Cond"}, {"Fn::Not": [{"Fn::Equals": [{"Fn::Select": [0, [1, 2]]}, 1]}]}]
    }


def test_loading_something_that_is_not_a_template_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("just: a mapping\n", encoding="utf-8")
    with pytest.raises(TemplateError, match="not a CloudFormation template"):
        load_template(path)


def test_vpc_config_is_applied_only_when_subnets_are_given(template: Template) -> None:
    vpc = template.raw["Globals"]["Function"]["VpcConfig"]
    assert resolve(vpc, template.context()) is NO_VALUE
    given = template.context(parameters={"SubnetIds": "subnet-a,subnet-b", "SecurityGroupIds": "sg-1"})
    assert resolve(vpc, given) == {"SubnetIds": ["subnet-a", "subnet-b"], "SecurityGroupIds": ["sg-1"]}


def test_functions_run_python_313_on_arm64_with_tracing(template: Template) -> None:
    function_globals = template.raw["Globals"]["Function"]
    assert function_globals["Runtime"] == "python3.13"
    assert function_globals["Architectures"] == ["arm64"]
    assert function_globals["Tracing"] == "Active"


# --- queues (docs/contracts.md §1) -----------------------------------------------------------------------


# Declared job types whose consumer function has not landed yet (the encryption/indexing and the batch/cleanup
# work add them): their queues exist, so producers can already send, but no function reads them.
NOT_YET_CONSUMED: set[str] = set()


def test_the_declared_job_types_are_the_contract() -> None:
    assert tuple(JOB_KINDS) == JOB_TYPES
    assert {name for name, kind in JOB_KINDS.items() if kind.fifo} == FIFO_JOB_TYPES


def test_every_declared_job_type_has_its_queue_dlq_function_and_alarms_and_nothing_else_does(
    template: Template,
) -> None:
    kinds = list(JOB_KINDS.values())
    sqs_fed = {fn.logical_id for fn in template.functions.values() if fn.sqs_events}
    depth_alarms = alarms_on(template, "ApproximateNumberOfMessagesVisible")
    age_alarms = alarms_on(template, "ApproximateAgeOfOldestMessage")
    assert set(template.main_queues) == {kind.queue_logical_id for kind in kinds}
    assert template.dead_letter_queue_ids == {kind.dead_letter_queue_logical_id for kind in kinds}
    assert sqs_fed == {kind.function_logical_id for kind in kinds if kind.name not in NOT_YET_CONSUMED}
    assert set(depth_alarms) == template.dead_letter_queue_ids
    assert set(age_alarms) == set(template.main_queues)
    for kind in kinds:
        queue = template.queues[kind.queue_logical_id]
        assert queue.fifo == kind.fifo, kind.name
        assert queue.dead_letter_logical_id == kind.dead_letter_queue_logical_id, kind.name
        if kind.name in NOT_YET_CONSUMED:
            continue
        function = template.functions[kind.function_logical_id]
        assert [event.queue_logical_id for event in function.sqs_events] == [kind.queue_logical_id]


def test_every_job_type_has_its_queue_and_no_queue_lacks_a_job_type(template: Template) -> None:
    expected = {JOB_KINDS[job_type].queue_logical_id for job_type in JOB_TYPES}
    assert set(template.main_queues) == expected
    for job_type in JOB_TYPES:
        spec = template.queues[JOB_KINDS[job_type].queue_logical_id]
        suffix = ".fifo" if job_type in FIFO_JOB_TYPES else ""
        assert spec.name == f"switchboard-local-{job_type}{suffix}"


def test_logical_ids_and_variables_derive_from_job_types() -> None:
    assert JOB_KINDS["send-message"].queue_logical_id == "SendMessageQueue"
    assert JOB_KINDS["delivery-confirmation"].queue_logical_id == "DeliveryConfirmationQueue"
    assert JOB_KINDS["delivery-confirmation"].function_logical_id == "DeliveryConfirmationFunction"
    assert JOB_KINDS["delivery-confirmation"].queue_url_variable == "DELIVERY_CONFIRMATION_QUEUE_URL"


def test_send_message_queue_is_fifo_with_per_conversation_throughput(template: Template) -> None:
    spec = template.queues["SendMessageQueue"]
    assert spec.fifo
    assert spec.attributes["ContentBasedDeduplication"] == "false"  # MessageDeduplicationId = job_id
    assert spec.attributes["DeduplicationScope"] == "messageGroup"
    assert spec.attributes["FifoThroughputLimit"] == "perMessageGroupId"
    others = [q for k, q in template.main_queues.items() if k != "SendMessageQueue"]
    assert others and not any(q.fifo for q in others)


def test_every_queue_has_its_own_dead_letter_queue_of_the_same_kind(template: Template) -> None:
    dead_letter_ids = [q.dead_letter_logical_id for q in template.main_queues.values()]
    assert len(set(dead_letter_ids)) == len(dead_letter_ids) == len(JOB_TYPES)
    for logical_id, spec in template.main_queues.items():
        dlq = template.queues[f"{logical_id.removesuffix('Queue')}DLQ"]
        assert spec.dead_letter_logical_id == dlq.logical_id
        assert dlq.fifo == spec.fifo
        assert dlq.name.endswith(".fifo") == spec.fifo
        assert dlq.attributes["MessageRetentionPeriod"] == "1209600"
        assert dlq.dead_letter_logical_id is None


def test_max_receive_count_comes_from_the_template_parameter(template: Template) -> None:
    for logical_id in template.main_queues:
        redrive = template.resources[logical_id]["Properties"]["RedrivePolicy"]
        assert redrive["maxReceiveCount"] == {"Ref": "MaxReceiveCount"}
        assert template.queues[logical_id].max_receive_count == int(template.parameters["MaxReceiveCount"])


def test_every_queue_is_encrypted_at_rest(template: Template) -> None:
    assert len(template.queues) == 2 * len(JOB_TYPES)
    for spec in template.queues.values():
        assert spec.attributes.get("SqsManagedSseEnabled") == "true" or "KmsMasterKeyId" in spec.attributes


def test_queue_visibility_timeout_is_at_least_six_times_its_consumers_timeout(template: Template) -> None:
    consumed = 0
    for logical_id, spec in template.main_queues.items():
        function = template.function_for_queue(logical_id)
        if function is None:
            continue
        consumed += 1
        assert int(spec.attributes["VisibilityTimeout"]) >= 6 * function.timeout, logical_id
    assert consumed >= 2


def test_queue_urls_are_stack_outputs(template: Template) -> None:
    outputs = template.raw["Outputs"]
    for logical_id in template.queues:
        assert outputs[f"{logical_id}Url"]["Value"] == {"Ref": logical_id}


# --- alarms --------------------------------------------------------------------------------------------


def alarms_on(template: Template, metric: str) -> dict[str, dict[str, Any]]:
    """queue logical id -> properties of the alarm on that queue's `metric`."""
    found = {}
    for props in resources_of_type(template, "AWS::CloudWatch::Alarm").values():
        if props.get("Namespace") == "AWS/SQS" and props.get("MetricName") == metric:
            (dimension,) = props["Dimensions"]
            assert dimension["Name"] == "QueueName"
            assert dimension["Value"]["Fn::GetAtt"][1] == "QueueName"
            found[dimension["Value"]["Fn::GetAtt"][0]] = props
    return found


def test_every_dead_letter_queue_alarms_as_soon_as_it_holds_a_message(template: Template) -> None:
    alarms = alarms_on(template, "ApproximateNumberOfMessagesVisible")
    assert set(alarms) >= template.dead_letter_queue_ids
    for logical_id in template.dead_letter_queue_ids:
        alarm = alarms[logical_id]
        assert (alarm["Statistic"], alarm["Period"], alarm["EvaluationPeriods"]) == ("Maximum", 60, 1)
        assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)
        assert alarm["TreatMissingData"] == "notBreaching"
        assert alarm["AlarmActions"] == {
            "Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]
        }


def test_every_job_queue_alarms_when_its_oldest_job_waits_too_long(template: Template) -> None:
    alarms = alarms_on(template, "ApproximateAgeOfOldestMessage")
    assert set(alarms) >= set(template.main_queues)
    for logical_id in template.main_queues:
        assert alarms[logical_id]["Threshold"] == {"Ref": "OldestMessageAgeAlarmSeconds"}
        assert alarms[logical_id]["ComparisonOperator"] == "GreaterThanThreshold"


def test_alarms_have_no_actions_unless_a_topic_is_given(template: Template) -> None:
    actions = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
    assert resolve(actions, template.context()) is NO_VALUE
    topic = "arn:aws:sns:us-east-1:123456789012:alarms"
    assert resolve(actions, template.context(parameters={"AlarmTopicArn": topic})) == [topic]


# --- functions and event sources -----------------------------------------------------------------------


def test_every_sqs_event_source_reports_batch_item_failures_and_caps_concurrency(template: Template) -> None:
    sources = [(fn, event) for fn in template.functions.values() for event in fn.sqs_events]
    consumed = {event.queue_logical_id for _, event in sources}
    assert consumed >= {"SendMessageQueue", "DeliveryConfirmationQueue"}
    for fn, event in sources:
        assert event.function_response_types == ("ReportBatchItemFailures",), fn.logical_id
        assert event.maximum_concurrency is not None and event.maximum_concurrency >= 2, fn.logical_id
        raw_events = template.resources[fn.logical_id]["Properties"]["Events"].values()
        for raw in raw_events:
            assert raw["Properties"]["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "MaximumConcurrency"}
        if template.queues[event.queue_logical_id].fifo:
            assert event.batching_window_seconds == 0  # not supported on FIFO event sources
            assert event.batch_size <= 10


def test_send_message_and_delivery_confirmation_batching(template: Template) -> None:
    (send,) = template.functions["SendMessageFunction"].sqs_events
    (confirm,) = template.functions["DeliveryConfirmationFunction"].sqs_events
    assert (send.queue_logical_id, send.batch_size, send.batching_window_seconds) == (
        "SendMessageQueue",
        10,
        0,
    )
    assert (confirm.queue_logical_id, confirm.batch_size, confirm.batching_window_seconds) == (
        "DeliveryConfirmationQueue",
        25,
        1,
    )


def test_every_handler_points_at_an_existing_lambda_handler(template: Template) -> None:
    assert template.functions
    for fn in template.functions.values():
        assert fn.handler == f"{fn.module.replace('.', '/')}.{fn.attribute}"
        assert re.fullmatch(r"handlers\.\w+", fn.module), fn.handler
        path = ROOT / f"{fn.module.replace('.', '/')}.py"
        assert path.is_file(), f"{fn.logical_id}: {path} does not exist"
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        names |= {
            t.id
            for node in tree.body
            if isinstance(node, ast.Assign)
            for t in node.targets
            if isinstance(t, ast.Name)
        }
        assert fn.attribute in names, f"{path} defines no {fn.attribute}"


def test_each_function_is_told_its_dead_letter_queue(template: Template) -> None:
    for fn in template.functions.values():
        for event in fn.sqs_events:
            dlq = template.queues[event.queue_logical_id].dead_letter_logical_id
            assert fn.environment["DEAD_LETTER_QUEUE_URL"] == {"Ref": dlq}


def test_environment_merges_globals_with_the_function(template: Template) -> None:
    send = template.functions["SendMessageFunction"].environment
    assert send["POWERTOOLS_SERVICE_NAME"] == "switchboard"
    assert send["DB_SECRET_ARN"] == {"Ref": "DatabaseSecretArn"}
    assert send["INDEXING_QUEUE_URL"] == {"Ref": "IndexingQueue"}
    assert send["NOTIFICATION_QUEUE_URL"] == {"Ref": "NotificationQueue"}
    assert "INDEXING_QUEUE_URL" not in template.functions["DeliveryConfirmationFunction"].environment


# --- IAM --------------------------------------------------------------------------------------------


def test_no_iam_statement_grants_a_wildcard_action(template: Template) -> None:
    statements = list(policy_statements(template))
    assert statements
    for owner, statement in statements:
        assert "NotAction" not in statement, owner
        for action in as_list(statement["Action"]):
            assert isinstance(action, str) and "*" not in action, f"{owner}: {action}"


def granted(template: Template, logical_id: str, action: str) -> list[Any]:
    resources: list[Any] = []
    for owner, statement in policy_statements(template):
        if owner == logical_id and statement["Effect"] == "Allow" and action in as_list(statement["Action"]):
            resources += as_list(statement["Resource"])
    return resources


def test_functions_may_send_exactly_to_the_queues_they_are_told_about(template: Template) -> None:
    for fn in template.functions.values():
        env = fn.environment
        queue_refs = [v for k, v in env.items() if k.endswith("_QUEUE_URL") and isinstance(v, dict)]
        told = {ref["Ref"] for ref in queue_refs}
        # A standard queue's consumer also sends records it did not start (deadline) back to its own queue.
        own = {e.queue_logical_id for e in fn.sqs_events if not template.queues[e.queue_logical_id].fifo}
        may_send = {r["Fn::GetAtt"][0] for r in granted(template, fn.logical_id, "sqs:SendMessage")}
        assert may_send == told | own, fn.logical_id


def test_functions_may_only_delay_messages_of_their_own_queue(template: Template) -> None:
    for fn in template.functions.values():
        own = [{"Fn::GetAtt": [event.queue_logical_id, "Arn"]} for event in fn.sqs_events]
        if fn.logical_id == "ManagementFunction":
            # A selective redrive releases the dead-letter messages it received and did not move.
            own = [{"Fn::GetAtt": [kind.dead_letter_queue_logical_id, "Arn"]} for kind in JOB_KINDS.values()]
        assert granted(template, fn.logical_id, "sqs:ChangeMessageVisibility") == own, fn.logical_id


def test_functions_read_only_the_secret_they_need(template: Template) -> None:
    for fn in template.functions.values():
        secrets = granted(template, fn.logical_id, "secretsmanager:GetSecretValue")
        if fn.logical_id == "WebSocketAuthorizerFunction":
            # No database; the signing secret only when one is configured.
            assert secrets == [{"Ref": "JwtSecretArn"}]
            (policy,) = fn.policies
            assert policy["Fn::If"][0] == "HasJwtSecretArn"
            assert policy["Fn::If"][2] == {"Ref": "AWS::NoValue"}
        elif fn.logical_id == "ScheduledCleanupFunction":
            assert secrets == []  # no database: it only sends the daily cleanup job
        else:
            assert secrets == [{"Ref": "DatabaseSecretArn"}], fn.logical_id
        assert granted(template, fn.logical_id, "cloudwatch:PutMetricData") == []  # metrics are EMF logs


MANAGE_CONNECTIONS = re.compile(
    r"arn:\$\{AWS::Partition\}:execute-api:\$\{AWS::Region\}:\$\{AWS::AccountId\}:"
    r"\$\{WebSocketApi\}/\$\{WebSocketStage\}/(POST|GET|DELETE)/@connections/\*"
)
# The @connections methods each WebSocket-facing function uses; any other function may only POST.
CONNECTION_METHODS = {
    "SendMessageFunction": {"POST"},
    "DeliveryConfirmationFunction": {"POST"},
    "WebSocketDefaultFunction": {"POST"},
    "StaleConnectionSweeperFunction": {"DELETE"},
    "WebSocketAuthorizerFunction": set(),
    "WebSocketConnectFunction": set(),
    "WebSocketDisconnectFunction": set(),
}


def test_manage_connections_is_scoped_to_this_api_stage_and_the_methods_used(template: Template) -> None:
    for fn in template.functions.values():
        methods = set()
        for resource in granted(template, fn.logical_id, "execute-api:ManageConnections"):
            match = MANAGE_CONNECTIONS.fullmatch(resource["Fn::Sub"])
            assert match, f"{fn.logical_id}: {resource}"
            methods.add(match.group(1))
        assert methods == CONNECTION_METHODS.get(fn.logical_id, methods & {"POST"}), fn.logical_id
        if methods:
            assert fn.environment["WEBSOCKET_ENDPOINT"] == {
                "Fn::Sub": "https://${WebSocketApi}.execute-api.${AWS::Region}.amazonaws.com/${WebSocketStage}"
            }


# --- provisioning against moto --------------------------------------------------------------------------


def test_provision_creates_every_queue_with_its_kind_and_redrive(template: Template, sqs: Any) -> None:
    stack = provision(template, sqs_client=sqs, stack_name="switchboard-test")
    assert set(stack.queue_urls) == set(template.queues)
    assert len(sqs.list_queues(QueueNamePrefix="switchboard-test-")["QueueUrls"]) == 2 * len(JOB_TYPES)
    for logical_id, spec in template.queues.items():
        attributes = sqs.get_queue_attributes(QueueUrl=stack.queue_urls[logical_id], AttributeNames=["All"])[
            "Attributes"
        ]
        assert attributes.get("FifoQueue", "false") == ("true" if spec.fifo else "false"), logical_id
        assert attributes["QueueArn"] == stack.queue_arns[logical_id]
        if spec.dead_letter_logical_id is None:
            assert "RedrivePolicy" not in attributes
            continue
        assert attributes["VisibilityTimeout"] == "180"
        redrive = json.loads(attributes["RedrivePolicy"])
        assert redrive["deadLetterTargetArn"] == stack.queue_arns[spec.dead_letter_logical_id]
        assert int(redrive["maxReceiveCount"]) == 5


def test_provision_honours_parameter_overrides(template: Template, sqs: Any) -> None:
    stack = provision(template, sqs_client=sqs, parameters={"MaxReceiveCount": "9"})
    url = stack.queue_urls["IndexingQueue"]
    redrive = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])["Attributes"]
    assert int(json.loads(redrive["RedrivePolicy"])["maxReceiveCount"]) == 9
    assert stack.function_environment(template.functions["SendMessageFunction"])["MAX_RECEIVE_COUNT"] == "9"


def test_job_queue_returns_the_queue_and_its_dead_letter_queue(template: Template, sqs: Any) -> None:
    stack = provision(template, sqs_client=sqs)
    url, dlq_url = stack.job_queue("send-message")
    assert url.endswith("/switchboard-local-send-message.fifo")
    assert dlq_url.endswith("/switchboard-local-send-message-dlq.fifo")
    with pytest.raises(KeyError, match="no-such-job"):
        stack.job_queue("no-such-job")


@pytest.fixture
def stack(template: Template, sqs: Any) -> Stack:
    return provision(template, sqs_client=sqs, parameters={"DatabaseSecretArn": SECRET_ARN})


def test_function_environment_resolves_queue_urls_parameters_and_pseudo_parameters(
    template: Template, stack: Stack
) -> None:
    environment = stack.function_environment(template.functions["SendMessageFunction"])
    assert environment["DEAD_LETTER_QUEUE_URL"] == stack.queue_urls["SendMessageDLQ"]
    assert environment["INDEXING_QUEUE_URL"] == stack.queue_urls["IndexingQueue"]
    assert environment["NOTIFICATION_QUEUE_URL"] == stack.queue_urls["NotificationQueue"]
    assert environment["DB_SECRET_ARN"] == SECRET_ARN
    assert environment["MAX_RECEIVE_COUNT"] == "5"
    assert environment["WEBSOCKET_ENDPOINT"] == "https://local.execute-api.us-east-1.amazonaws.com/prod"
    assert all(isinstance(value, str) for value in environment.values())

    confirm = stack.function_environment(template.functions["DeliveryConfirmationFunction"], {"EXTRA": "1"})
    assert confirm["DEAD_LETTER_QUEUE_URL"] == stack.queue_urls["DeliveryConfirmationDLQ"]
    assert confirm["EXTRA"] == "1"
    assert "INDEXING_QUEUE_URL" not in confirm


def test_a_required_parameter_left_unset_leaves_its_variable_out(template: Template, sqs: Any) -> None:
    assert template.required_parameters == ["DatabaseSecretArn", "JwtAudience", "JwtIssuer"]
    stack = provision(template, sqs_client=sqs)
    assert "DB_SECRET_ARN" not in stack.function_environment(template.functions["SendMessageFunction"])
    authorizer = stack.function_environment(template.functions["WebSocketAuthorizerFunction"])
    assert "JWT_ISSUER" not in authorizer and "JWT_AUDIENCE" not in authorizer


def test_intrinsics_resolve_against_provisioned_resources(stack: Stack) -> None:
    ctx = stack.context()
    assert resolve({"Fn::GetAtt": ["CleanupQueue", "Arn"]}, ctx) == stack.queue_arns["CleanupQueue"]
    sub = {"Fn::Sub": "${CleanupQueue.QueueName}!${!Literal}"}
    assert resolve(sub, ctx) == "switchboard-local-cleanup!${Literal}"
    assert resolve({"Fn::Select": [1, {"Fn::Split": ["/", "a/b/c"]}]}, ctx) == "b"
    assert resolve({"Fn::Or": [{"Fn::Equals": ["a", "b"]}, {"Condition": "HasVpc"}]}, ctx) is False
    with pytest.raises(TemplateError, match="NoSuchThing"):
        resolve({"Ref": "NoSuchThing"}, ctx)
    with pytest.raises(TemplateError, match="not provisioned"):
        resolve({"Fn::GetAtt": ["SendMessageFunction", "Arn"]}, ctx)


# --- schema migrations on deploy (docs/contracts.md §1) ----------------------------------------------------


def test_schema_head_is_the_alembic_head_so_a_new_migration_runs_on_deploy(template: Template) -> None:
    from shared.db.migrations import head_revision

    props = template.resources["SchemaMigration"]["Properties"]
    assert props["SchemaHead"] == head_revision(), (
        "a migration was added: set SchemaMigration.SchemaHead in template.yaml to its revision, "
        "or CloudFormation will not run it on deploy"
    )


def test_schema_migration_is_served_by_the_migration_function(template: Template) -> None:
    resource = template.resources["SchemaMigration"]
    assert resource["Type"] == "Custom::SchemaMigration"
    props = resource["Properties"]
    assert props["ServiceToken"] == {"Fn::GetAtt": ["MigrationFunction", "Arn"]}
    fn = template.functions["MigrationFunction"]
    assert fn.handler == "handlers/migration.lambda_handler"
    assert fn.timeout == 300 and not fn.sqs_events
    # CloudFormation gives up soon after the function's deadline, not after its default hour
    assert fn.timeout < props["ServiceTimeout"] <= 600
    raw = template.resources["MigrationFunction"]["Properties"]
    assert raw["EventInvokeConfig"]["MaximumRetryAttempts"] == 0  # a request is answered once
    assert "VpcConfig" not in raw  # the Globals' VpcConfig: it reaches the database like the other functions
    assert raw["LoggingConfig"]["LogGroup"] == {"Ref": "MigrationLogGroup"}
    assert template.resources["MigrationLogGroup"]["Type"] == "AWS::Logs::LogGroup"
    statements = [s for owner, s in policy_statements(template) if owner == "MigrationFunction"]
    assert [(s["Action"], s["Resource"]) for s in statements] == [
        ("secretsmanager:GetSecretValue", {"Ref": "DatabaseSecretArn"})
    ]
    # the functions' 10 s statement timeout would cut a migration of a big table short
    assert int(fn.environment["DB_STATEMENT_TIMEOUT_MS"]) < fn.timeout * 1000


def test_database_functions_are_deployed_after_the_schema_they_need(template: Template) -> None:
    import networkx
    from cfnlint.decode import decode
    from cfnlint.template import Template as LintTemplate

    database_functions = {
        fn.logical_id
        for fn in template.functions.values()
        if {"Ref": "DatabaseSecretArn"} in granted(template, fn.logical_id, "secretsmanager:GetSecretValue")
    } - {"MigrationFunction"}
    assert {"SendMessageFunction", "NotificationFunction", "WebSocketConnectFunction"} <= database_functions
    for logical_id in database_functions:
        assert template.resources[logical_id].get("DependsOn") == "SchemaMigration", logical_id
    # ... and the migration depends on none of them (no cycle: CloudFormation would refuse the template)
    raw, _ = decode(str(TEMPLATE_PATH))
    graph = LintTemplate(str(TEMPLATE_PATH), raw, ["us-east-1"]).graph.graph
    assert list(networkx.simple_cycles(graph)) == []
    for logical_id in database_functions:
        assert networkx.has_path(graph, logical_id, "SchemaMigration")
        assert not networkx.has_path(graph, "SchemaMigration", logical_id)


# --- deploy settings -----------------------------------------------------------------------------------


def test_samconfig_overrides_only_parameters_the_template_declares(template: Template) -> None:
    config = tomllib.loads((ROOT / "samconfig.toml").read_text(encoding="utf-8"))
    declared = set(template.raw["Parameters"])
    assert config["default"]["global"]["parameters"]["stack_name"] == "switchboard-dev"
    assert config["prod"]["global"]["parameters"]["stack_name"] == "switchboard-prod"
    for environment in ("default", "prod"):
        deploy = config[environment]["deploy"]["parameters"]
        overrides = dict(item.split("=", 1) for item in deploy["parameter_overrides"])
        assert set(overrides) <= declared, environment
        assert set(template.required_parameters) <= set(overrides), environment
        assert deploy["capabilities"] == "CAPABILITY_IAM"
        assert deploy["confirm_changeset"] is True


def test_requirements_txt_matches_the_package_dependencies() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    lines = (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    requirements = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert sorted(requirements) == sorted(pyproject["project"]["dependencies"])


# --- the WebSocket API (docs/contracts.md §6) ---------------------------------------------------------------

WEBSOCKET_ROUTES = {
    "$connect": "WebSocketConnectFunction",
    "$disconnect": "WebSocketDisconnectFunction",
    "$default": "WebSocketDefaultFunction",
    "search": "WebSocketSearchFunction",
}


def test_websocket_api_selects_routes_by_the_action_field(template: Template) -> None:
    (api,) = resources_of_type(template, "AWS::ApiGatewayV2::Api").values()
    assert api["ProtocolType"] == "WEBSOCKET"
    assert api["RouteSelectionExpression"] == "$request.body.action"
    assert template.websocket_api is not None
    assert template.websocket_api.route_selection_expression == "$request.body.action"


def test_websocket_routes_are_read_from_the_template(template: Template) -> None:
    routes = {key: spec.logical_id for key, spec in template.websocket_routes.items()}
    assert routes == WEBSOCKET_ROUTES
    assert template.websocket_authorizer is template.functions["WebSocketAuthorizerFunction"]
    assert template.websocket_api is not None
    assert template.websocket_api.identity_sources == ("route.request.querystring.token",)


def test_every_route_has_a_lambda_proxy_integration_and_an_invoke_permission(template: Template) -> None:
    routes = resources_of_type(template, "AWS::ApiGatewayV2::Route")
    integrations = resources_of_type(template, "AWS::ApiGatewayV2::Integration")
    permissions = resources_of_type(template, "AWS::Lambda::Permission")
    assert {route["RouteKey"] for route in routes.values()} == set(WEBSOCKET_ROUTES)
    for route in routes.values():
        assert route["ApiId"] == {"Ref": "WebSocketApi"}
        integration_id = route["Target"]["Fn::Sub"].removeprefix("integrations/${").removesuffix("}")
        integration = integrations[integration_id]
        function_id = WEBSOCKET_ROUTES[route["RouteKey"]]
        assert integration["IntegrationType"] == "AWS_PROXY"
        assert f"${{{function_id}.Arn}}/invocations" in integration["IntegrationUri"]["Fn::Sub"]
        (permission,) = [p for p in permissions.values() if p["FunctionName"] == {"Ref": function_id}]
        assert permission["Action"] == "lambda:InvokeFunction"
        assert permission["Principal"] == "apigateway.amazonaws.com"
        assert permission["SourceArn"]["Fn::Sub"] == (
            "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:"
            f"${{WebSocketApi}}/${{WebSocketStage}}/{route['RouteKey']}"
        )


def test_connect_route_is_behind_the_token_authorizer(template: Template) -> None:
    routes = {r["RouteKey"]: r for r in resources_of_type(template, "AWS::ApiGatewayV2::Route").values()}
    assert routes["$connect"]["AuthorizationType"] == "CUSTOM"
    assert routes["$connect"]["AuthorizerId"] == {"Ref": "WebSocketAuthorizer"}
    assert all(routes[key]["AuthorizationType"] == "NONE" for key in ("$disconnect", "$default", "search"))
    authorizer = template.resources["WebSocketAuthorizer"]["Properties"]
    assert authorizer["AuthorizerType"] == "REQUEST"
    assert authorizer["IdentitySource"] == ["route.request.querystring.token"]
    assert "${WebSocketAuthorizerFunction.Arn}/invocations" in authorizer["AuthorizerUri"]["Fn::Sub"]
    (permission,) = [
        p
        for p in resources_of_type(template, "AWS::Lambda::Permission").values()
        if p["FunctionName"] == {"Ref": "WebSocketAuthorizerFunction"}
    ]
    assert permission["Principal"] == "apigateway.amazonaws.com"
    assert permission["SourceArn"]["Fn::Sub"].endswith(
        ":${WebSocketApi}/authorizers/${WebSocketAuthorizer}"
    )


def test_authorizer_is_configured_for_tokens_and_needs_no_database_or_vpc(template: Template) -> None:
    fn = template.functions["WebSocketAuthorizerFunction"]
    raw = template.resources["WebSocketAuthorizerFunction"]["Properties"]
    assert raw["VpcConfig"] == {"Ref": "AWS::NoValue"}
    assert fn.environment["JWT_ISSUER"] == {"Ref": "JwtIssuer"}
    assert fn.environment["JWT_AUDIENCE"] == {"Ref": "JwtAudience"}
    api = {"WebSocketApi": "api"}
    environment = resolve(fn.environment, template.context(refs=api))
    assert "JWT_SECRET_ARN" not in environment and "JWT_JWKS_URL" not in environment
    given = {"JwtSecretArn": SECRET_ARN, "JwtJwksUrl": "https://issuer/jwks"}
    environment = resolve(fn.environment, template.context(parameters=given, refs=api))
    assert (environment["JWT_SECRET_ARN"], environment["JWT_JWKS_URL"]) == (SECRET_ARN, "https://issuer/jwks")
    (rule,) = template.raw["Rules"].values()
    assert "JwtSecretArn" in json.dumps(rule) and "JwtJwksUrl" in json.dumps(rule)


def test_stage_is_deployed_after_every_route_with_throttling(template: Template) -> None:
    deployment = template.resources["WebSocketDeployment"]
    routes = resources_of_type(template, "AWS::ApiGatewayV2::Route")
    assert set(deployment["DependsOn"]) == set(routes)
    (stage,) = resources_of_type(template, "AWS::ApiGatewayV2::Stage").values()
    assert stage["StageName"] == {"Ref": "WebSocketStage"}
    assert stage["DeploymentId"] == {"Ref": "WebSocketDeployment"}
    assert template.parameters["WebSocketStage"] == "prod"
    settings = stage["DefaultRouteSettings"]
    assert settings["ThrottlingBurstLimit"] == {"Ref": "WebSocketThrottlingBurstLimit"}
    assert settings["ThrottlingRateLimit"] == {"Ref": "WebSocketThrottlingRateLimit"}


def test_websocket_url_is_a_stack_output(template: Template) -> None:
    url = template.raw["Outputs"]["WebSocketUrl"]["Value"]["Fn::Sub"]
    assert url == "wss://${WebSocketApi}.execute-api.${AWS::Region}.amazonaws.com/${WebSocketStage}"


def test_sweeper_runs_every_quarter_hour(template: Template) -> None:
    events = template.resources["StaleConnectionSweeperFunction"]["Properties"]["Events"]
    (event,) = events.values()
    assert (event["Type"], event["Properties"]["Schedule"]) == ("Schedule", "rate(15 minutes)")


def test_websocket_functions_answer_within_api_gateways_integration_timeout(template: Template) -> None:
    for key, fn in template.websocket_routes.items():
        assert fn.timeout < 29, key
    assert template.websocket_authorizer is not None and template.websocket_authorizer.timeout < 29


def test_provision_resolves_the_api_to_a_local_id(template: Template, stack: Stack) -> None:
    ctx = stack.context()
    assert resolve({"Ref": "WebSocketApi"}, ctx) == "local"
    endpoint = resolve({"Fn::GetAtt": ["WebSocketApi", "ApiEndpoint"]}, ctx)
    assert endpoint == "wss://local.execute-api.us-east-1.amazonaws.com"
    for fn in template.functions.values():
        assert stack.function_environment(fn)["WEBSOCKET_ENDPOINT"].startswith("https://local.execute-api.")


def test_provision_takes_another_api_id(template: Template, sqs: Any) -> None:
    stack = provision(template, sqs_client=sqs, api_ids={"WebSocketApi": "abc123"})
    environment = stack.function_environment(template.functions["WebSocketDefaultFunction"])
    assert environment["WEBSOCKET_ENDPOINT"] == "https://abc123.execute-api.us-east-1.amazonaws.com/prod"
    assert environment["DELIVERY_CONFIRMATION_QUEUE_URL"] == stack.queue_urls["DeliveryConfirmationQueue"]


WEBSOCKET_TEMPLATE = """
Resources:
  Api:
    Type: AWS::ApiGatewayV2::Api
    Properties: {ProtocolType: WEBSOCKET, RouteSelectionExpression: "$request.body.action"}
  Fn:
    Type: AWS::Serverless::Function
    Properties: {Handler: handlers/x.lambda_handler}
  Integration:
    Type: AWS::ApiGatewayV2::Integration
    Properties:
      ApiId: !Ref Api
      IntegrationType: INTEGRATION_TYPE
      IntegrationUri: !Join ["", ["arn:aws:apigateway:r:lambda:path/", !GetAtt Fn.Arn, "/invocations"]]
  Authorizer:
    Type: AWS::ApiGatewayV2::Authorizer
    Properties: {ApiId: !Ref Api, AuthorizerUri: !Sub "${Fn.Arn}", IdentitySource: [route.request.header.A]}
  Route:
    Type: AWS::ApiGatewayV2::Route
    Properties:
      ApiId: !Ref Api
      RouteKey: ROUTE_KEY
      AuthorizerId: !Ref Authorizer
      Target: !Join ["/", [integrations, !Ref Integration]]
"""


def websocket_template(tmp_path: Path, **replace: str) -> Template:
    text = WEBSOCKET_TEMPLATE
    for name, value in {"INTEGRATION_TYPE": "AWS_PROXY", "ROUTE_KEY": "$connect", **replace}.items():
        text = text.replace(name, value)
    path = tmp_path / "t.yaml"
    path.write_text(text, encoding="utf-8")
    return load_template(path)


def test_routes_resolve_through_join_getatt_and_sub_forms(tmp_path: Path) -> None:
    template = websocket_template(tmp_path)
    assert {k: v.logical_id for k, v in template.websocket_routes.items()} == {"$connect": "Fn"}
    assert template.websocket_authorizer is template.functions["Fn"]
    assert template.websocket_api is not None
    assert template.websocket_api.identity_sources == ("route.request.header.A",)


def test_a_route_the_local_gateway_cannot_run_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="AWS_PROXY"):
        _ = websocket_template(tmp_path, INTEGRATION_TYPE="HTTP_PROXY").websocket_routes
    with pytest.raises(TemplateError, match=r"\$connect only"):
        _ = websocket_template(tmp_path, ROUTE_KEY="$default").websocket_routes


def test_a_template_without_a_websocket_api_has_no_routes(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("Resources:\n  Q:\n    Type: AWS::SQS::Queue\n", encoding="utf-8")
    template = load_template(path)
    assert template.websocket_api is None and template.websocket_authorizer is None
    assert template.websocket_routes == {}


def test_two_websocket_apis_are_a_clear_error(tmp_path: Path) -> None:
    raw = websocket_template(tmp_path).raw
    raw["Resources"]["Api2"] = raw["Resources"]["Api"]
    with pytest.raises(TemplateError, match="more than one WebSocket API"):
        _ = Template(raw).websocket_routes
