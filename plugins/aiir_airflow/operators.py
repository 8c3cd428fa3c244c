"""Operators for aiir playbooks. Each one is a thin shell over one ``aiir`` function.

Pattern (after apache/airflow providers/amazon): a typed base operator, ``template_fields`` declared,
nothing expensive in ``__init__``, the hook (and with it the DeploymentTarget) built lazily in
``execute``. aiir errors become ``AirflowFailException`` — a bad conf or a broken bundle will not be
fixed by a retry — with the same one-line message the CLI prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from airflow.sdk import Context

    from aiir.incident import IncidentRecord

from aiir_airflow.hooks import DeploymentTargetHook
from aiir_airflow.links import DriftReportLink, EvidenceLink, FindingsLink, IncidentLink, ReportLink

RECORD_FROM_XCOM = "{{ ti.xcom_pull(task_ids='open_incident') }}"


def _fail_on_aiir_error(fn):
    """Bad input and broken integrity fail at once (a retry cannot fix them); a target that did not
    answer (TargetError) is raised as is, so the task's retries apply."""

    def wrapper(self, context):
        from aiir.errors import BadInput, IntegrityError

        try:
            return fn(self, context)
        except (BadInput, IntegrityError) as exc:
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def _task_context(context: Context) -> dict[str, Any]:
    ti = context["ti"]
    return {"dag_id": ti.dag_id, "task_id": ti.task_id, "run_id": ti.run_id, "try_number": ti.try_number}


def record_from_params(conf: Any, context: Context, kind: str = "data_poisoning") -> IncidentRecord:
    """The incident record of this run: the conf (Params) validated, with the id and detection time
    defaulting to the run's id and trigger time — so every task of the run derives the same record."""
    from aiir.incident import id_from_run, validate_conf

    dag_run = context.get("dag_run")
    when = getattr(dag_run, "run_after", None) or getattr(dag_run, "logical_date", None)
    body = dict(conf) if isinstance(conf, dict) else conf
    return validate_conf(body, default_id=id_from_run(context["run_id"]),
                         default_detected_at=when.isoformat() if when else None, kind=kind)


def _playbook_step(playbook: str, step: str, roles: tuple[str, ...]):
    """The step of the definition (ValueError at parse time when the DAG names a step it does not have)."""
    from aiir.errors import BadInput
    from aiir.playbooks import get_playbook

    try:
        s = get_playbook(playbook).step(step)
    except BadInput as exc:
        raise ValueError(str(exc)) from None
    if s.role not in roles:
        raise ValueError(f"step {step!r} of playbook {playbook!r} has role {s.role!r}; this operator runs "
                         f"{', '.join(roles)}")
    return s


def _wants(fn, name: str) -> bool:
    import inspect

    params = inspect.signature(fn).parameters
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


class _TargetMixin:
    """The run's DeploymentTarget, from the connection the conf names (or the operator's, or the kind's
    default) — the same for every step of the run, and for the trigger that waits on it."""

    target_conn_id: str | None

    def target_hook(self, record: IncidentRecord) -> DeploymentTargetHook:
        return DeploymentTargetHook(record.target_kind, record.target_name,
                                    target_conn_id=record.target_conn_id or self.target_conn_id)


class OpenIncidentOperator(BaseOperator):
    """Validate the run's conf (the trigger form's Params), save the incident record and pin the
    suspect and last-known-good versions. Fails, with the field named, on a malformed conf."""

    template_fields: Sequence[str] = ("conf",)
    operator_extra_links = (IncidentLink(),)

    def __init__(self, *, conf: dict[str, Any] | str = "{{ params }}", playbook: str = "data_poisoning",
                 step: str = "open_incident", **kwargs) -> None:
        super().__init__(**kwargs)
        self.conf = conf
        self.playbook = playbook
        self.step = step
        _playbook_step(playbook, step, ("open",))

    @_fail_on_aiir_error
    def execute(self, context: Context) -> dict[str, Any]:
        record = record_from_params(self.conf, context, self.playbook)
        pinned = _playbook_step(self.playbook, self.step, ("open",)).run(record)
        self.log.info("incident %s (%s) opened on %s: %s", record.incident_id, self.playbook, record.model_name,
                      {k: v for k, v in (pinned or {}).items() if k.endswith("_version")})
        return record.to_dict()


class AiirIncidentOperator(BaseOperator):
    """Base of playbook-step operators: gets the incident record (XCom of ``open_incident``)."""

    template_fields: Sequence[str] = ("incident",)
    ui_color = "#f4d9d0"

    def __init__(self, *, incident: dict[str, Any] | str | None = RECORD_FROM_XCOM, **kwargs) -> None:
        super().__init__(**kwargs)
        self.incident = incident

    def record(self, context: Context | None = None) -> IncidentRecord:
        from aiir.errors import BadInput
        from aiir.incident import IncidentRecord

        if self.incident is None and context is not None:
            # a playbook without an open step: the record comes from the run's conf, saved once
            from aiir.incident import save

            record = record_from_params(context["params"], context, getattr(self, "playbook", "data_poisoning"))
            save(record)
            return record
        if not isinstance(self.incident, dict):
            raise BadInput("incident", "expected the incident record from open_incident (set "
                                       "render_template_as_native_obj=True on the DAG)")
        return IncidentRecord(**self.incident)


class IsolateEndpointOperator(_TargetMixin, BaseOperator):
    """Contain: the playbook's containment step through the DeploymentTarget (isolate to last-known-good,
    quarantine, or block clients — the playbook's strategy).

    The playbook's first task. It validates the conf itself (a malformed conf fails here, before
    anything is touched) and imports only the target's client — no mlflow, pandas or sklearn — so it
    acts within a second of starting. When the platform is still applying the change (a SageMaker endpoint
    update, a Kubernetes rollout) it defers to :class:`~aiir_airflow.triggers.TargetSettledTrigger` (no
    worker slot held) and, once settled, re-reads the target to catch a silent rollback."""

    template_fields: Sequence[str] = ("conf", "target_conn_id")
    ui_color = "#e06666"
    operator_extra_links = (IncidentLink(),)

    def __init__(self, *, conf: dict[str, Any] | str = "{{ params }}", target_conn_id: str | None = None,
                 playbook: str = "data_poisoning", step: str = "isolate_endpoint", poll_interval: float = 5.0,
                 settle_timeout: float = 1800.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.conf = conf
        self.target_conn_id = target_conn_id
        self.playbook = playbook
        self.step = step
        self.poll_interval = poll_interval
        self.settle_timeout = settle_timeout
        _playbook_step(playbook, step, ("contain",))

    @_fail_on_aiir_error
    def execute(self, context: Context) -> dict[str, Any]:
        record = record_from_params(self.conf, context, self.playbook)
        hook = self.target_hook(record)
        result = _playbook_step(self.playbook, self.step, ("contain",)).run(record, target=hook.target)
        self.log.info("contained %s in %.3f s: mode=%s", result["target"], result["seconds"],
                      result["after"]["mode"])
        if not result["after"].get("settled", True):
            from aiir_airflow.triggers import TargetSettledTrigger

            self.log.info("%s still settling (%s); deferring", result["target"], result["after"].get("pending"))
            self.defer(trigger=TargetSettledTrigger(target_kind=record.target_kind, target_name=record.target_name,
                                                    target_conn_id=hook.target_conn_id,
                                                    poll_interval=self.poll_interval, timeout=self.settle_timeout),
                       method_name="execute_complete")
        return result

    @_fail_on_aiir_error
    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        from aiir import playbook
        from aiir.errors import TargetError

        if event.get("status") != "settled":
            raise TargetError(event.get("message") or f"target did not settle: {event}")
        record = record_from_params(self.conf, context, self.playbook)
        return playbook.contain_settled(record, event["state"], waited_s=event.get("waited_s"))


class PlaybookStepOperator(_TargetMixin, AiirIncidentOperator):
    """Run one named step of a playbook definition (its function, with the run's target when it takes one)."""

    template_fields: Sequence[str] = ("incident", "step")
    ROLES = ("step", "report")
    operator_extra_links = (IncidentLink(), ReportLink())

    def __init__(self, *, step: str, playbook: str = "data_poisoning", target_conn_id: str | None = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        _playbook_step(playbook, step, self.ROLES)
        self.playbook = playbook
        self.step = step
        self.target_conn_id = target_conn_id

    def step_kwargs(self, record: IncidentRecord, fn, context: Context) -> dict[str, Any]:
        return {"target": self.target_hook(record).target} if _wants(fn, "target") else {}

    @_fail_on_aiir_error
    def execute(self, context: Context) -> dict[str, Any]:
        record = self.record(context)
        step = _playbook_step(self.playbook, self.step, self.ROLES)
        return step.run(record, **self.step_kwargs(record, step.function(), context))


class PreserveEvidenceOperator(PlaybookStepOperator):
    """Seal evidence into a signed, write-once bundle. The Ed25519 key comes from the Airflow connection
    ``signing_conn_id`` (password: PEM private key) when it exists, else from aiir's key file."""

    template_fields: Sequence[str] = ("incident", "signing_conn_id")
    ROLES = ("preserve",)
    operator_extra_links = (EvidenceLink(), IncidentLink())

    def __init__(self, *, step: str = "preserve_evidence", signing_conn_id: str = "aiir_evidence_signing",
                 **kwargs) -> None:
        super().__init__(step=step, **kwargs)
        self.signing_conn_id = signing_conn_id

    def signing_key(self):
        from airflow.sdk import BaseHook

        try:
            conn = BaseHook.get_connection(self.signing_conn_id)
        except Exception:
            return None
        if not conn.password:
            return None
        from aiir.evidence.keys import load_private_key_pem

        return load_private_key_pem(conn.password.encode())

    def step_kwargs(self, record: IncidentRecord, fn, context: Context) -> dict[str, Any]:
        ctx = _task_context(context)
        kw = super().step_kwargs(record, fn, context)
        kw.update(signing_key=self.signing_key(), actor=f"airflow:{ctx['dag_id']}", context=ctx)
        return kw


class DataIntegrityCheckOperator(BaseOperator):
    """Run ``aiir check`` on a new batch; push findings; open the incident record when it fails."""

    template_fields: Sequence[str] = ("model_name", "reference", "current", "label_column", "source_column",
                                      "target_kind", "target_name", "regimes")
    operator_extra_links = (FindingsLink(), DriftReportLink(), IncidentLink())

    def __init__(self, *, model_name: str, reference: str = "", current: str = "", label_column: str = "",
                 source_column: str = "", target_kind: str = "local", target_name: str = "",
                 regimes: list[str] | str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.reference = reference
        self.current = current
        self.label_column = label_column
        self.source_column = source_column
        self.target_kind = target_kind
        self.target_name = target_name
        self.regimes = regimes

    @_fail_on_aiir_error
    def execute(self, context: Context) -> dict[str, Any]:
        from aiir import integrity_job

        events = []
        for _asset, evs in (context.get("triggering_asset_events") or {}).items():
            events.extend(getattr(e, "extra", {}) or {} for e in evs)
        return integrity_job.run(
            model_name=self.model_name, reference=self.reference or None, current=self.current or None,
            label_column=self.label_column or None, source_column=self.source_column or None,
            target_kind=self.target_kind, target_name=self.target_name or self.model_name,
            regimes=self.regimes or None, asset_events=events, run_id=context["run_id"],
        )


class RecoveryStepOperator(BaseOperator):
    """One step of a retrain playbook (``retrain_from_clean_data``: build, validate, train, gate, promote)."""

    template_fields: Sequence[str] = ("conf", "step")
    operator_extra_links = (IncidentLink(),)

    def __init__(self, *, step: str, conf: dict[str, Any] | str = "{{ params }}",
                 playbook: str = "retrain_from_clean_data", **kwargs) -> None:
        super().__init__(**kwargs)
        _playbook_step(playbook, step, ("step",))
        self.step = step
        self.playbook = playbook
        self.conf = conf

    @_fail_on_aiir_error
    def execute(self, context: Context) -> dict[str, Any]:
        from aiir import recovery

        conf = recovery.validate_conf(dict(self.conf))
        step = _playbook_step(self.playbook, self.step, ("step",))
        fn = step.function()
        kwargs: dict[str, Any] = {}
        if _wants(fn, "target"):
            hook = DeploymentTargetHook(conf["target_kind"], conf["target_name"],
                                        target_conn_id=conf.get("target_conn_id") or None)
            kwargs["target"] = None if conf["dry_run"] else hook.target
        return step.run(conf, **kwargs)


class TriggerPlaybookOperator(BaseOperator):
    """Trigger another aiir DAG (the incident playbook, the clean retrain) and optionally wait for it.

    A light stand-in for ``TriggerDagRunOperator``: that operator imports SQLAlchemy models at module
    level, which costs every DAG file that uses it ~20 ms of parse time on each dag-processor pass. This one
    imports nothing at parse time and hands the trigger to the task runner through the same
    ``DagRunTriggerException``; with ``wait_for_completion`` it defers to the standard provider's
    ``DagStateTrigger`` in the triggerer (no worker slot held) and resumes in :meth:`execute_complete`.

    With ``from_summary`` (the XCom of a detection task: ``aiir check`` / ``aiir scan-evasion``) the playbook,
    run id and conf come from the summary, and the task *skips itself* when the detection opened no incident —
    a clean batch triggers nothing and, a skipped task firing no success callback, raises no
    ``incident_opened`` alert. (A short circuit in front of it would *succeed* on every clean run.)
    """

    template_fields: Sequence[str] = ("trigger_dag_id", "trigger_run_id", "conf", "from_summary")
    ui_color = "#ffefeb"

    def __init__(self, *, trigger_dag_id: str = "", trigger_run_id: str = "",
                 conf: dict[str, Any] | str | None = None, from_summary: dict[str, Any] | str | None = None,
                 wait_for_completion: bool = False, poke_interval: int = 5,
                 skip_when_already_exists: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        if from_summary is None and not (trigger_dag_id and trigger_run_id):
            raise ValueError(f"{kwargs.get('task_id')}: give trigger_dag_id and trigger_run_id, or from_summary")
        self.trigger_dag_id = trigger_dag_id
        self.trigger_run_id = trigger_run_id
        self.conf = conf
        self.from_summary = from_summary
        self.wait_for_completion = wait_for_completion
        self.poke_interval = poke_interval
        self.skip_when_already_exists = skip_when_already_exists
        self.allowed_states = ["success"]
        self.failed_states = ["failed"]

    def _from_summary(self) -> None:
        from airflow.sdk.exceptions import AirflowSkipException

        summary = self.from_summary
        if not isinstance(summary, dict):
            # the detection task succeeded, so a missing summary is a wiring fault: never skip an incident
            raise AirflowFailException(f"from_summary must render to the detection's summary (a JSON object), "
                                       f"got {type(summary).__name__} (render_template_as_native_obj=True?)")
        incident = summary.get("incident") or {}
        if summary.get("status") != "incident" or not incident.get("incident_id"):
            why = f" ({summary['reason']})" if summary.get("reason") else ""
            raise AirflowSkipException(f"no incident opened: status {summary.get('status')}{why}")
        if not summary.get("playbook_dag_id"):
            raise AirflowFailException("the detection opened an incident but named no playbook_dag_id")
        self.trigger_dag_id = summary["playbook_dag_id"]
        self.trigger_run_id = incident["incident_id"]
        self.conf = summary.get("conf")

    def execute(self, context: Context) -> None:
        from airflow.sdk.exceptions import DagRunTriggerException

        if self.from_summary is not None or not self.trigger_dag_id:
            self._from_summary()
        if self.conf is not None and not isinstance(self.conf, dict):
            raise AirflowFailException(f"conf must render to a JSON object, got {type(self.conf).__name__} "
                                       "(set render_template_as_native_obj=True on the DAG)")
        if self.wait_for_completion and not self.skip_when_already_exists:
            # A re-run (task cleared) after the child run exists: wait on that run instead of failing on
            # "already exists" — triggering is idempotent, the child's result is what counts.
            ti = context["ti"]
            try:
                exists = ti.get_dr_count(dag_id=self.trigger_dag_id, run_ids=[self.trigger_run_id]) > 0
            except Exception:
                exists = False
            if exists:
                from airflow.providers.standard.triggers.external_task import DagStateTrigger

                self.log.info("%s run %s exists already: waiting on it", self.trigger_dag_id, self.trigger_run_id)
                self.defer(trigger=DagStateTrigger(dag_id=self.trigger_dag_id,
                                                   states=self.allowed_states + self.failed_states,
                                                   execution_dates=None, run_ids=[self.trigger_run_id],
                                                   poll_interval=self.poke_interval),
                           method_name="execute_complete")
        raise DagRunTriggerException(
            trigger_dag_id=self.trigger_dag_id, dag_run_id=self.trigger_run_id, conf=self.conf,
            reset_dag_run=False, skip_when_already_exists=self.skip_when_already_exists,
            wait_for_completion=self.wait_for_completion, allowed_states=self.allowed_states,
            failed_states=self.failed_states, poke_interval=self.poke_interval, deferrable=True,
        )

    def execute_complete(self, context: Context, event: Any) -> None:
        data = event[1] if isinstance(event, (tuple, list)) else event
        failed = [r for r in data.get("run_ids", []) if data.get(r) in self.failed_states]
        if failed:
            raise AirflowFailException(f"{self.trigger_dag_id} run(s) {failed} ended failed")
        self.log.info("%s run(s) %s succeeded", self.trigger_dag_id, data.get("run_ids"))


def _approval_base():
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    return ApprovalOperator


class PlaybookApprovalOperator(_approval_base()):
    """Airflow's HITL ApprovalOperator for a playbook's approval step: the person's answer (who, when, why)
    goes to the step's own function *before* Airflow acts on it — promotion approved or rejected, quarantine
    forced or not, incident confirmed or closed as a false positive — so the decision is on record (and in
    the report) even when the tasks downstream are skipped on a rejection."""

    operator_extra_links = (IncidentLink(),)

    def __init__(self, *, playbook: str, step: str, incident: dict[str, Any] | str | None = None,
                 conf: dict[str, Any] | str = "{{ params }}", target_conn_id: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        _playbook_step(playbook, step, ("approval",))
        self.playbook = playbook
        self.step = step
        self.incident = incident
        self.conf = conf
        self.target_conn_id = target_conn_id

    template_fields: Sequence[str] = (*_approval_base().template_fields, "incident", "conf")

    def _subject(self):
        from aiir.incident import IncidentRecord
        from aiir.playbooks import get_playbook

        if get_playbook(self.playbook).conf == "incident":
            return IncidentRecord(**self.incident)
        from aiir import recovery

        return recovery.validate_conf(dict(self.conf))

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        if "error" not in event:
            chosen = event.get("chosen_options") or []
            user = event.get("responded_by_user") or {}
            by = (user.get("name") or user.get("id")) if isinstance(user, dict) else str(user)
            params = event.get("params_input") or {}
            try:
                subject = self._subject()
                step = _playbook_step(self.playbook, self.step, ("approval",))
                fn = step.function()
                kwargs: dict[str, Any] = {"approve": bool(chosen) and chosen[0] == self.APPROVE,
                                          "actor": f"airflow:{by or 'unknown'}",
                                          "reason": str(params.get("reason", "")) if isinstance(params, dict) else ""}
                if _wants(fn, "target") and hasattr(subject, "target_kind"):
                    kwargs["target"] = DeploymentTargetHook(subject.target_kind, subject.target_name,
                                                            target_conn_id=subject.target_conn_id
                                                            or self.target_conn_id).target
                step.run(subject, **kwargs)
            except Exception as exc:  # recording must not lose the person's answer
                self.log.error("could not act on the approval decision: %s", exc)
                raise
        return super().execute_complete(context, event)


class LatencyProbeOperator(BaseOperator):
    """The latency probe's task: does nothing, in a worker like any playbook task (an ``EmptyOperator`` is
    marked done by the scheduler without a worker), so what ``bench/bench_mttc.py`` measures is the
    scheduler's trigger-to-task time and the worker's start."""

    ui_color = "#eeeeee"

    def execute(self, context: Context) -> None:
        return None
