"""Evals and runs as a team sees them: create, read, list, update, cancel, delete.

Every query is scoped by team; another team's eval, run or item answers 404 like a missing
one, and another team's model or file named in a body is the 400 a missing one gets.
Everything a run will need is checked at create (graders, templates against the item
schema, the model, the items themselves), so a run never fails on its definition; the run
is recorded and its task enqueued after commit.
"""

from __future__ import annotations

import collections
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from service import ids
from service.config import get_settings
from service.db import utcnow
from service.dispatch import enqueue
from service.errors import BudgetExceeded, InvalidRequest, NotFound
from service.evals import graders
from service.evals import items as item_data
from service.evals.calls import cost_of
from service.evals.models import (
    TERMINAL_RUN_STATUSES,
    Eval,
    EvalOutputItem,
    EvalRun,
    RunStatus,
)
from service.evals.templating import TemplateError, check_against_schema, strings_in
from service.files import service as files
from service.jobs.inference import provider_for_model
from service.pagination import keyset_page
from service.tenants import audit

RUN_TASK = "evals.run"
SAMPLING_KEYS = ("temperature", "top_p", "seed", "max_completion_tokens", "response_format")


def _metadata(value: Any, param: str = "metadata") -> dict[str, str] | None:
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or len(value) > 16
        or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512
            for k, v in value.items()
        )
    ):
        raise InvalidRequest(
            "metadata must map at most 16 keys (64 chars) to string values (512 chars).",
            param=param,
        )
    return value


def check_model(session: Session, team_id: str, model: str, param: str) -> None:
    """A model the team may call; another team's fine-tune is the 400 a missing one gets."""
    try:
        provider_for_model(session, team_id, model)
    except NotFound:
        raise InvalidRequest(
            f"The model '{model}' does not exist or you do not have access to it.",
            param=param,
            code="model_not_found",
        ) from None


# --- evals -------------------------------------------------------------------------------


def _data_source_config(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest("data_source_config is required.", param="data_source_config")
    kind = value.get("type")
    if kind in ("logs", "stored_completions"):
        raise InvalidRequest(
            f"data_source_config type '{kind}' reads completions stored by OpenAI, which ftq "
            "does not keep; use type 'custom' with an item_schema.",
            param="data_source_config.type",
            code="unsupported_data_source",
        )
    if kind != "custom":
        raise InvalidRequest(
            "data_source_config.type must be 'custom'.", param="data_source_config.type"
        )
    schema = value.get("item_schema")
    if not isinstance(schema, dict):
        raise InvalidRequest(
            "data_source_config.item_schema must be a JSON schema object.",
            param="data_source_config.item_schema",
        )
    return {
        "type": "custom",
        "item_schema": schema,
        "include_sample_schema": bool(value.get("include_sample_schema", False)),
    }


def validate_criteria(
    session: Session, team_id: str, criteria: Any, config: dict[str, Any]
) -> list[dict[str, Any]]:
    if not isinstance(criteria, list) or not criteria:
        raise InvalidRequest(
            "testing_criteria must be a non-empty array of graders.", param="testing_criteria"
        )
    checked, names = [], set()
    for index, spec in enumerate(criteria):
        grader = graders.validate(
            spec,
            f"testing_criteria[{index}]",
            item_schema=config["item_schema"],
            has_sample=config["include_sample_schema"],
            python_enabled=get_settings().evals.python_grader_enabled,
            check_model=lambda model, param: check_model(session, team_id, model, param),
        )
        if grader["name"] in names:
            raise InvalidRequest(
                f"Two testing criteria are named '{grader['name']}'; names must be unique.",
                param=f"testing_criteria[{index}].name",
            )
        names.add(grader["name"])
        checked.append(grader)
    return checked


def create_eval(
    session: Session,
    team_id: str,
    body: dict[str, Any],
    *,
    template: dict[str, Any] | None = None,
) -> Eval:
    config = _data_source_config(body.get("data_source_config"))
    criteria = validate_criteria(session, team_id, body.get("testing_criteria"), config)
    name = body.get("name") or ""
    if not isinstance(name, str) or len(name) > 256:
        raise InvalidRequest("name must be a string of at most 256 characters.", param="name")
    record = Eval(
        id=ids.new_id("eval_"),
        team_id=team_id,
        name=name,
        data_source_config=config,
        testing_criteria=criteria,
        user_metadata=_metadata(body.get("metadata")),
        template=template,
    )
    session.add(record)
    audit.record(session, None, "eval.create", "eval", record.id, team_id=team_id)
    return record


def get_eval(session: Session, team_id: str, eval_id: str) -> Eval:
    record = session.exec(
        select(Eval).where(
            Eval.id == eval_id, Eval.team_id == team_id, col(Eval.deleted_at).is_(None)
        )
    ).first()
    if record is None:
        raise NotFound(
            f"No eval found with id '{eval_id}'.", param="eval_id", code="eval_not_found"
        )
    return record


def _list(
    session: Session,
    query: Any,
    model: Any,
    scope: list[Any],
    *,
    after: str | None,
    order: str,
    limit: int,
    sort: tuple[Any, ...] | None = None,
) -> tuple[list[Any], bool]:
    """One page in OpenAI's ``order``, on the shared keyset pagination (an unknown or
    foreign ``after`` is the same 400 ``invalid_cursor`` as on every other list)."""
    if order not in ("asc", "desc"):
        raise InvalidRequest("order must be 'asc' or 'desc'.", param="order")
    if not 1 <= limit <= 100:
        raise InvalidRequest("limit must be between 1 and 100.", param="limit")
    return keyset_page(
        session,
        query,
        after=after,
        limit=limit,
        id_column=col(model.id),
        order=sort or (col(model.created_at), col(model.id)),
        scope=scope,
        descending=order == "desc",
    )


def list_evals(
    session: Session, team_id: str, *, after: str | None, limit: int, order: str
) -> tuple[list[Eval], bool]:
    scope = [col(Eval.team_id) == team_id, col(Eval.deleted_at).is_(None)]
    return _list(
        session, select(Eval).where(*scope), Eval, scope, after=after, order=order, limit=limit
    )


def update_eval(session: Session, team_id: str, eval_id: str, body: dict[str, Any]) -> Eval:
    record = get_eval(session, team_id, eval_id)
    unknown = set(body) - {"name", "metadata"}
    if unknown:
        raise InvalidRequest(
            f"Only name and metadata can be updated, not {', '.join(sorted(unknown))}.",
            param=sorted(unknown)[0],
        )
    if "name" in body:
        if not isinstance(body["name"], str) or len(body["name"]) > 256:
            raise InvalidRequest("name must be a string of at most 256 characters.", param="name")
        record.name = body["name"]
    if "metadata" in body:
        record.user_metadata = _metadata(body["metadata"])
    session.add(record)
    audit.record(session, None, "eval.update", "eval", record.id, team_id=team_id)
    return record


def delete_eval(session: Session, team_id: str, eval_id: str) -> Eval:
    record = get_eval(session, team_id, eval_id)
    record.deleted_at = utcnow()
    session.add(record)
    for run in session.exec(
        select(EvalRun).where(EvalRun.eval_id == record.id, col(EvalRun.deleted_at).is_(None))
    ):
        _stop(session, run)
        run.deleted_at = utcnow()
        session.add(run)
    audit.record(session, None, "eval.delete", "eval", record.id, team_id=team_id)
    return record


def eval_object(record: Eval) -> dict[str, Any]:
    config = record.data_source_config
    properties: dict[str, Any] = {"item": config["item_schema"]}
    required = ["item"]
    if config.get("include_sample_schema"):
        properties["sample"] = {
            "type": "object",
            "properties": {
                "model": {"type": "string"},
                "choices": {"type": "array"},
                "output_text": {"type": "string"},
                "output_json": {"type": "object"},
                "usage": {"type": "object"},
            },
            "required": ["model", "choices", "output_text"],
        }
        required.append("sample")
    result = {
        "object": "eval",
        "id": record.id,
        "name": record.name,
        "created_at": int(record.created_at.timestamp()),
        "metadata": record.user_metadata,
        "data_source_config": {
            "type": "custom",
            "schema": {"type": "object", "properties": properties, "required": required},
        },
        "testing_criteria": record.testing_criteria,
    }
    if record.template:
        result["template"] = record.template
    return result


# --- runs --------------------------------------------------------------------------------


def _source_items(
    session: Session, team_id: str, record: Eval, source: Any
) -> list[dict[str, Any]]:
    """The run's items as ``{"item": ..., "sample": ...}``, read and checked now."""
    limit = get_settings().evals.max_items
    param = "data_source.source"
    if not isinstance(source, dict):
        raise InvalidRequest("data_source.source is required.", param=param)
    mapping = (record.template or {}).get("fields")
    if source.get("type") == "file_content":
        content = source.get("content")
        if not isinstance(content, list) or not content:
            raise InvalidRequest(
                "data_source.source.content must be a non-empty array of {item, sample}.",
                param=f"{param}.content",
            )
        if len(content) > limit:
            raise InvalidRequest(f"A run takes at most {limit} items.", param=f"{param}.content")
        lines = content
    elif source.get("type") == "file_id":
        file_id = source.get("id")
        if not isinstance(file_id, str):
            raise InvalidRequest("data_source.source.id must be a file id.", param=f"{param}.id")
        try:
            record_file = files.get_file(session, team_id, file_id)
        except NotFound:
            raise InvalidRequest(
                f"invalid file id: {file_id}", param=f"{param}.id", code="file_not_found"
            ) from None
        lines = list(
            item_data.read_lines(files.file_path(record_file), param=f"{param}.id", limit=limit)
        )
    elif source.get("type") == "stored_completions":
        raise InvalidRequest(
            "ftq does not store completions; use a file_content or file_id source.",
            param=f"{param}.type",
            code="unsupported_data_source",
        )
    else:
        raise InvalidRequest(
            "data_source.source.type must be 'file_content' or 'file_id'.", param=f"{param}.type"
        )
    result: list[dict[str, Any]] = []
    for index, line in enumerate(lines):
        if not isinstance(line, dict):
            raise InvalidRequest(
                f"Item {index} is not an object.", param=param, code="invalid_item"
            )
        item, sample = item_data.to_item(line, mapping)
        result.append({"item": item, "sample": sample})
    item_data.check_items(
        [r["item"] for r in result], record.data_source_config["item_schema"], param
    )
    if not result:
        raise InvalidRequest("The data source has no items.", param=param)
    return result


def _check_template(messages: Any, record: Eval, param: str) -> None:
    config = record.data_source_config
    for text in strings_in(messages):
        try:
            # Sampling prompts cannot see a sample yet.
            check_against_schema(text, config["item_schema"], has_sample=False)
        except TemplateError as exc:
            raise InvalidRequest(f"{param}: {exc}", param=param, code="invalid_template") from None


def _data_source(
    session: Session, team_id: str, record: Eval, value: Any
) -> tuple[dict[str, Any], list[dict[str, Any]], str | None]:
    if not isinstance(value, dict):
        raise InvalidRequest("data_source is required.", param="data_source")
    kind = value.get("type")
    if kind == "responses":
        raise InvalidRequest(
            "data_source type 'responses' reads OpenAI's stored responses; use 'completions'.",
            param="data_source.type",
            code="unsupported_data_source",
        )
    if kind not in ("jsonl", "completions"):
        raise InvalidRequest(
            "data_source.type must be 'jsonl' or 'completions'.", param="data_source.type"
        )
    rows = _source_items(session, team_id, record, value.get("source"))
    criteria_need_sample = any("sample." in text for text in strings_in(record.testing_criteria))
    if kind == "jsonl":
        if criteria_need_sample and any(r["sample"] is None for r in rows):
            raise InvalidRequest(
                "The eval's graders read {{sample...}}, so every jsonl item needs a 'sample' "
                "(or use a 'completions' data source to sample a model).",
                param="data_source.source",
                code="invalid_item",
            )
        return dict(value), rows, None
    model = value.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest(
            "data_source.model is required for completions.", param="data_source.model"
        )
    check_model(session, team_id, model, "data_source.model")
    messages = value.get("input_messages")
    if not isinstance(messages, dict) or messages.get("type") not in ("template", "item_reference"):
        raise InvalidRequest(
            "data_source.input_messages must be a template or an item_reference.",
            param="data_source.input_messages",
        )
    if messages["type"] == "template":
        template = messages.get("template")
        if not isinstance(template, list) or not template:
            raise InvalidRequest(
                "input_messages.template must be a non-empty array of messages.",
                param="data_source.input_messages.template",
            )
        for index, message in enumerate(template):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise InvalidRequest(
                    f"input_messages.template[{index}] needs a role and content.",
                    param=f"data_source.input_messages.template[{index}]",
                )
        _check_template(template, record, "data_source.input_messages.template")
    else:
        reference = messages.get("item_reference")
        if not isinstance(reference, str) or not reference.startswith("item."):
            raise InvalidRequest(
                "input_messages.item_reference must name an item field, e.g. 'item.messages'.",
                param="data_source.input_messages.item_reference",
            )
        field = reference.split(".", 1)[1].split(".")[0]
        for index, row in enumerate(rows):
            if not isinstance(row["item"].get(field), list):
                raise InvalidRequest(
                    f"Item {index} has no message list at '{reference}'.",
                    param="data_source.input_messages.item_reference",
                    code="invalid_item",
                )
    sampling = value.get("sampling_params") or {}
    if not isinstance(sampling, dict):
        raise InvalidRequest(
            "sampling_params must be an object.", param="data_source.sampling_params"
        )
    return dict(value), rows, model


def _check_budget(session: Session, team_id: str) -> None:
    from service.jobs import budgets

    limit = budgets.budget_for(session, team_id)
    if limit is None:
        return
    # Jobs' holds and costs and the month's eval spend, as GET /v1/usage counts them.
    remaining = budgets.usage(session, team_id).get("remaining_usd") or 0.0
    committed = limit - remaining
    if remaining <= 0:
        raise BudgetExceeded(
            f"Your team has spent or reserved ${committed:.2f} of its ${limit:.2f} monthly "
            "budget; eval runs call models and cannot start until the budget is raised.",
            param="data_source",
        )


def create_run(
    session: Session,
    team_id: str,
    eval_id: str,
    body: dict[str, Any],
    *,
    gate_job_id: str | None = None,
    gate_role: str | None = None,
) -> EvalRun:
    record = get_eval(session, team_id, eval_id)
    data_source, rows, model = _data_source(session, team_id, record, body.get("data_source"))
    name = body.get("name") or (f"{model or 'jsonl'} run")
    if not isinstance(name, str) or len(name) > 256:
        raise InvalidRequest("name must be a string of at most 256 characters.", param="name")
    account = provider_for_model(session, team_id, model).account if model else None
    calls_models = model is not None or any(
        c.get("type") in ("label_model", "score_model", "multi")
        or c.get("evaluation_metric") == "cosine"
        for c in record.testing_criteria
    )
    if calls_models:
        _check_budget(session, team_id)
    run = EvalRun(
        id=ids.new_id("evalrun_"),
        team_id=team_id,
        eval_id=record.id,
        name=name,
        model=model,
        data_source=data_source,
        items=rows,
        user_metadata=_metadata(body.get("metadata")),
        total_items=len(rows),
        account=account,
        gate_job_id=gate_job_id,
        gate_role=gate_role,
    )
    session.add(run)
    audit.record(session, None, "eval.run.create", "eval_run", run.id, team_id=team_id)
    enqueue(RUN_TASK, run.id)
    return run


def get_run(session: Session, team_id: str, eval_id: str, run_id: str) -> EvalRun:
    run = session.exec(
        select(EvalRun).where(
            EvalRun.id == run_id,
            EvalRun.eval_id == eval_id,
            EvalRun.team_id == team_id,
            col(EvalRun.deleted_at).is_(None),
        )
    ).first()
    if run is None:
        raise NotFound(f"No run found with id '{run_id}'.", param="run_id", code="run_not_found")
    return run


def list_runs(
    session: Session,
    team_id: str,
    eval_id: str,
    *,
    after: str | None,
    limit: int,
    order: str,
    status: str | None,
) -> tuple[list[EvalRun], bool]:
    record = get_eval(session, team_id, eval_id)
    scope = [
        col(EvalRun.eval_id) == record.id,
        col(EvalRun.team_id) == team_id,
        col(EvalRun.deleted_at).is_(None),
    ]
    query = select(EvalRun).where(*scope)
    if status:
        if status not in set(RunStatus):
            raise InvalidRequest(f"status must be one of {', '.join(RunStatus)}.", param="status")
        query = query.where(EvalRun.status == status)
    return _list(session, query, EvalRun, scope, after=after, order=order, limit=limit)


def _stop(session: Session, run: EvalRun) -> None:
    if run.status not in TERMINAL_RUN_STATUSES:
        # The worker re-reads the status before each item: it stops within one item, and
        # an item in flight then is not recorded, so the cost settled here is final.
        run.status = RunStatus.canceled
        run.cancel_requested = True
        run.finished_at = run.updated_at = utcnow()
        record = session.get(Eval, run.eval_id)
        if record is not None:
            run.cost_usd = summarize(record, run, _item_rows(session, run.id))["cost_usd"]


def cancel_run(session: Session, team_id: str, eval_id: str, run_id: str) -> EvalRun:
    run = get_run(session, team_id, eval_id, run_id)
    if run.status in (RunStatus.completed, RunStatus.failed):
        raise InvalidRequest(
            f"Run {run.id} has already {run.status}; it cannot be canceled.",
            param="run_id",
            code="invalid_run_state",
        )
    _stop(session, run)
    session.add(run)
    audit.record(session, None, "eval.run.cancel", "eval_run", run.id, team_id=team_id)
    return run


def delete_run(session: Session, team_id: str, eval_id: str, run_id: str) -> EvalRun:
    run = get_run(session, team_id, eval_id, run_id)
    _stop(session, run)
    run.deleted_at = utcnow()
    session.add(run)
    audit.record(session, None, "eval.run.delete", "eval_run", run.id, team_id=team_id)
    return run


# --- results -----------------------------------------------------------------------------


def _item_rows(
    session: Session, run_id: str
) -> list[tuple[str, list[dict[str, Any]], dict[str, Any] | None]]:
    return [
        (row[0], row[1], row[2])
        for row in session.execute(
            sa.select(EvalOutputItem.status, EvalOutputItem.results, EvalOutputItem.sample).where(  # type: ignore[call-overload]
                EvalOutputItem.run_id == run_id
            )
        )
    ]


def summarize(
    record: Eval, run: EvalRun, rows: list[tuple[str, list[dict[str, Any]], dict[str, Any] | None]]
) -> dict[str, Any]:
    counts = collections.Counter(status for status, _, _ in rows)
    per: dict[str, dict[str, float]] = {
        c["name"]: {"passed": 0, "failed": 0, "score": 0.0, "n": 0} for c in record.testing_criteria
    }
    usage: dict[str, dict[str, int]] = {}

    def add_usage(model: str | None, values: dict[str, Any] | None) -> None:
        if not model or not values:
            return
        entry = usage.setdefault(
            model,
            {
                "invocation_count": 0,
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "total_tokens": 0,
                "cached_tokens": 0,
            },
        )
        entry["invocation_count"] += 1
        for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            entry[key] += int(values.get(key) or 0)

    for status, results, sample in rows:
        if sample and not sample.get("error"):
            add_usage(sample.get("model"), sample.get("usage"))
        for result in results:
            entry = per.get(result.get("name", ""))
            if entry is not None and status != "error":
                entry["passed" if result.get("passed") else "failed"] += 1
                entry["score"] += float(result.get("score") or 0.0)
                entry["n"] += 1
            judge = result.get("sample") or {}
            add_usage(judge.get("model"), judge.get("usage"))
    cost = sum(cost_of(model, values) for model, values in usage.items())
    return {
        "result_counts": {
            "total": run.total_items,
            "passed": counts.get("pass", 0),
            "failed": counts.get("fail", 0),
            "errored": counts.get("error", 0),
        },
        "per_testing_criteria_results": [
            {
                "testing_criteria": name,
                "passed": int(v["passed"]),
                "failed": int(v["failed"]),
                # ftq extension: the mean score (pass rate for pass/fail graders).
                "average_score": round(v["score"] / v["n"], 6) if v["n"] else None,
            }
            for name, v in per.items()
        ],
        "per_model_usage": [{"model_name": m, **v} for m, v in usage.items()],
        "cost_usd": round(cost, 6),
    }


def run_object(session: Session, run: EvalRun, record: Eval | None = None) -> dict[str, Any]:
    record = record or session.get(Eval, run.eval_id)
    assert record is not None
    summary = summarize(record, run, _item_rows(session, run.id))
    return {
        "object": "eval.run",
        "id": run.id,
        "eval_id": run.eval_id,
        "name": run.name,
        "model": run.model or "",
        "status": run.status,
        "created_at": int(run.created_at.timestamp()),
        "data_source": run.data_source,
        "metadata": run.user_metadata,
        "error": run.error or {"code": "", "message": ""},
        "report_url": f"/v1/evals/{run.eval_id}/runs/{run.id}/output_items",
        "result_counts": summary["result_counts"],
        "per_testing_criteria_results": summary["per_testing_criteria_results"],
        "per_model_usage": summary["per_model_usage"],
        # ftq extensions
        "cost_usd": summary["cost_usd"],
        "metrics": run.metrics,
        "fine_tuning_job_id": run.gate_job_id,
    }


def get_output_item(
    session: Session, team_id: str, eval_id: str, run_id: str, item_id: str
) -> EvalOutputItem:
    run = get_run(session, team_id, eval_id, run_id)
    row = session.exec(
        select(EvalOutputItem).where(
            EvalOutputItem.id == item_id,
            EvalOutputItem.run_id == run.id,
            EvalOutputItem.team_id == team_id,
        )
    ).first()
    if row is None:
        raise NotFound(
            f"No output item found with id '{item_id}'.",
            param="output_item_id",
            code="output_item_not_found",
        )
    return row


def list_output_items(
    session: Session,
    team_id: str,
    eval_id: str,
    run_id: str,
    *,
    after: str | None,
    limit: int,
    order: str,
    status: str | None,
) -> tuple[list[EvalOutputItem], bool]:
    run = get_run(session, team_id, eval_id, run_id)
    scope = [col(EvalOutputItem.run_id) == run.id]
    query = select(EvalOutputItem).where(*scope)
    if status:
        if status not in ("pass", "fail", "error"):
            raise InvalidRequest("status must be 'pass', 'fail' or 'error'.", param="status")
        query = query.where(EvalOutputItem.status == status)
    # Items in the data source's order (one item per datasource index in a run).
    return _list(
        session,
        query,
        EvalOutputItem,
        scope,
        after=after,
        order=order,
        limit=limit,
        sort=(col(EvalOutputItem.datasource_item_id),),
    )


def output_item_object(row: EvalOutputItem) -> dict[str, Any]:
    return {
        "object": "eval.run.output_item",
        "id": row.id,
        "run_id": row.run_id,
        "eval_id": row.eval_id,
        "created_at": int(row.created_at.timestamp()),
        "status": row.status,
        "datasource_item_id": row.datasource_item_id,
        "datasource_item": row.datasource_item,
        "results": row.results,
        "sample": row.sample
        or {
            "input": [],
            "output": [],
            "model": "",
            "finish_reason": "",
            "usage": {
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "total_tokens": 0,
                "cached_tokens": 0,
            },
            "error": {"code": "", "message": ""},
            "temperature": 1.0,
            "top_p": 1.0,
            "seed": 0,
            "max_completion_tokens": 0,
        },
    }


def eval_spend(session: Session, team_id: str, month: str | None = None) -> float:
    """USD of the month's eval runs (sampling and judge calls), for usage and budgets."""
    from service.jobs.budgets import month_bounds

    start, end, _ = month_bounds(month)
    runs = list(
        session.exec(
            select(EvalRun).where(
                EvalRun.team_id == team_id,
                col(EvalRun.created_at) >= start,
                col(EvalRun.created_at) < end,
            )
        )
    )
    total = 0.0
    for run in runs:
        if run.status in TERMINAL_RUN_STATUSES:
            total += run.cost_usd  # settled when the run finished or was stopped
            continue
        record = session.get(Eval, run.eval_id)
        if record is not None:
            total += summarize(record, run, _item_rows(session, run.id))["cost_usd"]
    return round(total, 6)
