"""The incident console's FastAPI app (mounted under ``/aiir`` in the Airflow API server).

Pages (HTML, Jinja2 with autoescaping; no data ever reaches ``innerHTML``; the only script is the static
``console.js`` countdown, which writes ``textContent``)::

    GET  /incidents[?state=&model=]             every incident (the *Incidents* view in the navigation)
    GET  /incidents/{id}                        one incident (the *Incident* view)
    GET  /runs/{dag_id}/{run_id}                the incident of a DAG run (the *Incident* tab of a run)
    GET  /runs/{dag_id}/{run_id}/{what}         operator extra links: incident, findings, drift_report,
                                                evidence, report
    GET  /incidents/{id}/report[.md|.json]      the report; /evidence the bundle and its verification;
    GET  /incidents/{id}/check/{name}           the integrity check's files (findings.json, drift_report.html…)
    POST /incidents/{id}/approve                answer a waiting approval (promotion, quarantine, confirmation)
                                                through Airflow's HITL API: decision=approve, or reject + reason
    GET  /api/incidents[/{id}]                  the same data as JSON

Every endpoint depends on the API server's own authentication (``get_user``: the bearer token or the
``_token`` session cookie) and authorisation (``requires_access_dag``): reading needs read access to DAG
runs, approving needs write access to the retrain DAG's HITL details — and the approval itself is sent to
Airflow's public HITL endpoint with the caller's own credential, so Airflow checks it again (assigned
users included). A POST must come from the console's own origin (``Origin``/``Referer``), so another site
cannot make a signed-in browser approve.
"""

from __future__ import annotations

import json
import mimetypes
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import ChainableUndefined, Environment, FileSystemLoader, select_autoescape

from aiir import console
from aiir.errors import BadInput
from aiir.report import fmt, fmt_duration, fmt_time

HERE = Path(__file__).parent
RETRAIN_DAG = "retrain_from_clean_data"
CHECK_DAG = "data_integrity_check"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "form-action 'self'; frame-ancestors 'self'; base-uri 'none'")
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
WHATS = ("incident", "findings", "drift_report", "evidence", "report")
MESSAGES = {"approved": "Approval sent: Airflow resumes the playbook.",
            "rejected": "Rejection sent, with your reason: Airflow acts on it and the report records it.",
            "approve-failed": "Your answer was not sent (see the error below).",
            "closed": "Incident closed.", "close-failed": "The incident was not closed (see the error below)."}


# ------------------------------------------------------------------------------------ Airflow side
def _deps():
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import get_user, requires_access_dag

    return get_user, requires_access_dag, DagAccessEntity


def _api_base() -> str:
    from airflow.configuration import conf

    base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
    if not base:
        base = f"http://127.0.0.1:{conf.get('api', 'port', fallback='8080')}"
    return base


def _credential(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth and auth.lower().startswith("bearer "):
        return auth
    token = request.cookies.get("_token")
    return f"Bearer {token}" if token else None


class AirflowAPI:
    """Airflow's public REST API (v2), called with the caller's own credential."""

    def __init__(self, request: Request) -> None:
        import httpx

        self.base = _api_base()
        cred = _credential(request)
        self.client = httpx.Client(base_url=f"{self.base}/api/v2", timeout=15.0,
                                   headers={"Authorization": cred} if cred else {})

    def get(self, path: str, **params) -> Any:
        r = self.client.get(path, params=params)
        r.raise_for_status()
        return r.json()

    def patch(self, path: str, body: dict[str, Any]):
        return self.client.patch(path, json=body)

    def close(self) -> None:
        self.client.close()


def _runs(api: AirflowAPI) -> dict[str, list[dict[str, Any]]]:
    """The aiir runs per incident id (playbooks, retrains, the integrity checks that opened one)."""
    out: dict[str, list[dict[str, Any]]] = {}
    try:
        runs = api.get("/dags/~/dagRuns", limit=500, order_by="-run_after").get("dag_runs", [])
    except Exception:
        return out
    for r in runs:
        dag_id, run_id = str(r.get("dag_id")), str(r.get("dag_run_id"))
        if not (dag_id.startswith("incident_") or dag_id in (RETRAIN_DAG, CHECK_DAG)):
            continue
        iid = console.incident_of_run(run_id, r.get("conf") if isinstance(r.get("conf"), dict) else None)
        if iid:
            label = "check run" if dag_id == CHECK_DAG else ("retrain run" if dag_id == RETRAIN_DAG else "playbook run")
            out.setdefault(iid, []).append({"dag_id": dag_id, "run_id": run_id, "state": r.get("state"), "label": label,
                                            "href": f"/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"})
    return out


def _pending_approvals(api: AirflowAPI, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Human-in-the-loop requests of this incident's runs still waiting for a response."""
    out = []
    for run in runs:
        if run["dag_id"] == CHECK_DAG:
            continue
        try:
            items = api.get(f"/dags/{quote(run['dag_id'], safe='')}/dagRuns/{quote(run['run_id'], safe='')}/hitlDetails"
                            ).get("hitl_details", [])
        except Exception:
            continue
        for h in items:
            ti = h.get("task_instance") or {}
            if h.get("response_received"):
                continue
            out.append({"dag_id": run["dag_id"], "run_id": run["run_id"], "task_id": ti.get("task_id"),
                        "map_index": ti.get("map_index", -1), "subject": h.get("subject"), "body": h.get("body"),
                        "options": h.get("options") or [], "state": ti.get("state")})
    return out


def _check_origin(request: Request) -> None:
    """A state-changing request must come from a page of this server (CSRF defence)."""
    allowed = {urlsplit(_api_base()).netloc, request.headers.get("host", "")}
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or urlsplit(origin).netloc not in allowed:
        raise HTTPException(403, "cross-site request refused (the Origin is not this Airflow)")


# ------------------------------------------------------------------------------------ rendering
def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True),
                      undefined=ChainableUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["when"] = fmt_time
    env.filters["left"] = fmt_duration
    env.filters["fmt"] = fmt
    env.filters["url"] = lambda s: quote(str(s), safe="")
    env.filters["ttc"] = lambda s: "—" if s is None else (f"{s:.1f} s" if s < 120 else f"{s / 60:.0f} min")
    env.filters["json"] = lambda v: json.dumps(v, indent=2, default=str, ensure_ascii=False)
    return env


def _page(env: Environment, name: str, status: int = 200, **ctx) -> HTMLResponse:
    html = env.get_template(name).render(now=datetime.now(UTC), prefix=ctx.pop("prefix", "/aiir"), **ctx)
    return HTMLResponse(html, status_code=status, headers={"Content-Security-Policy": CSP,
                                                           "X-Content-Type-Options": "nosniff",
                                                           "Cache-Control": "no-store"})


def _prefix(request: Request) -> str:
    return (request.scope.get("root_path") or "/aiir").rstrip("/")


def create_app() -> FastAPI:
    get_user, requires_access_dag, DagAccessEntity = _deps()
    env = _env()
    read = [Depends(requires_access_dag("GET", DagAccessEntity.RUN))]
    signed_in = [Depends(get_user)]

    def _authorize(user: Any, method: str, entity: Any, dag_id: str) -> None:
        """The same check ``requires_access_dag`` makes, for a DAG known only after a lookup."""
        from airflow.api_fastapi.app import get_auth_manager
        from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

        if not get_auth_manager().is_authorized_dag(method=method, access_entity=entity,
                                                    details=DagDetails(id=dag_id), user=user):
            raise HTTPException(403, "Forbidden")
    app = FastAPI(title="aiir incident console", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):
        if "text/html" in request.headers.get("accept", ""):
            login_url = ""
            if exc.status_code == 401:
                try:
                    from airflow.api_fastapi.app import get_auth_manager

                    login_url = get_auth_manager().get_url_login(next_url=str(request.url))
                except Exception:  # no auth manager: no link
                    login_url = ""
            return _page(env, "message.html", status=exc.status_code, prefix=_prefix(request),
                         title=f"{exc.status_code}", message=str(exc.detail), login_url=login_url)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    @app.exception_handler(BadInput)
    async def _bad_input(request: Request, exc: BadInput):
        if "text/html" in request.headers.get("accept", ""):
            return _page(env, "message.html", status=404, prefix=_prefix(request), title="Not found",
                         message=str(exc))
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        if name not in ("console.css", "console.js", "icon.svg"):
            raise HTTPException(404, "not found")
        return FileResponse(HERE / "static" / name, media_type=mimetypes.guess_type(name)[0],
                            headers={"Cache-Control": "max-age=300"})

    @app.get("/", dependencies=read)
    def root(request: Request):
        return RedirectResponse(f"{_prefix(request)}/incidents", status_code=303)

    def _list(request: Request, state: str | None, model: str | None) -> list[dict[str, Any]]:
        state = state or None
        model = model or None
        if state and state not in console.STATES:
            raise HTTPException(400, f"state must be one of {', '.join(console.STATES)}")
        items = console.list_incidents(state=state, model=model)
        api = AirflowAPI(request)
        try:
            runs = _runs(api)
        finally:
            api.close()
        for s in items:
            s["runs"] = runs.get(s["incident_id"], [])
        return items

    @app.get("/incidents", dependencies=read, response_class=HTMLResponse)
    def incidents(request: Request, state: str = "", model: str = ""):
        items = _list(request, state, model)
        return _page(env, "incidents.html", prefix=_prefix(request), items=items, states=console.STATES,
                     models=console.models(), state=state, model=model)

    @app.get("/api/incidents", dependencies=read)
    def api_incidents(request: Request, state: str = "", model: str = ""):
        return {"incidents": _list(request, state, model)}

    def _detail(request: Request, incident_id: str) -> dict[str, Any]:
        d = console.detail(incident_id)
        api = AirflowAPI(request)
        try:
            d["runs"] = _runs(api).get(incident_id, [])
            d["approvals"] = _pending_approvals(api, d["runs"])
        finally:
            api.close()
        return d

    def _incident_page(request: Request, incident_id: str, msg: str = "", error: str = "") -> HTMLResponse:
        d = _detail(request, incident_id)
        return _page(env, "incident.html", prefix=_prefix(request), d=d, message=MESSAGES.get(msg, ""),
                     error=error, can_close=console.can_close())

    @app.get("/incidents/{incident_id}", dependencies=read, response_class=HTMLResponse)
    def incident(request: Request, incident_id: str, msg: str = ""):
        return _incident_page(request, incident_id, msg)

    @app.get("/api/incidents/{incident_id}", dependencies=read)
    def api_incident(request: Request, incident_id: str):
        return _detail(request, incident_id)

    def _run_conf(request: Request, dag_id: str, run_id: str) -> dict[str, Any] | None:
        api = AirflowAPI(request)
        try:
            run = api.get(f"/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}")
        except Exception:
            return None
        finally:
            api.close()
        return run.get("conf") if isinstance(run.get("conf"), dict) else None

    @app.get("/runs/{dag_id}/{run_id}", dependencies=read, response_class=HTMLResponse)
    def run_view(request: Request, dag_id: str, run_id: str):
        iid = console.incident_of_run(run_id, _run_conf(request, dag_id, run_id))
        if iid is None:
            return _page(env, "message.html", prefix=_prefix(request), title="No incident",
                         message=f"Run {run_id} of {dag_id} belongs to no aiir incident.")
        return _incident_page(request, iid)

    @app.get("/runs/{dag_id}/{run_id}/{what}", dependencies=read)
    def run_link(request: Request, dag_id: str, run_id: str, what: str):
        if what not in WHATS:
            raise HTTPException(404, f"unknown link {what!r}")
        p = _prefix(request)
        if what in ("findings", "drift_report"):
            name = "findings.json" if what == "findings" else "drift_report.html"
            d = console.check_dir_of_run(run_id) if dag_id == CHECK_DAG else None
            if d is not None and (d / name).is_file():
                return _file(d / name)
        iid = console.incident_of_run(run_id, _run_conf(request, dag_id, run_id))
        if iid is None:
            raise HTTPException(404, f"run {run_id} of {dag_id} belongs to no aiir incident")
        target = {"incident": "", "findings": "/check/findings.json", "drift_report": "/check/drift_report.html",
                  "evidence": "/evidence", "report": "/report"}[what]
        return RedirectResponse(f"{p}/incidents/{quote(iid, safe='')}{target}", status_code=303)

    def _file(path: Path) -> Response:
        media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if path.suffix == ".html":  # generated pages (Evidently) run sandboxed: no access to Airflow's origin
            headers = {"Content-Security-Policy": "sandbox allow-scripts; default-src 'self' 'unsafe-inline' data: blob:"}
        else:
            headers = {"Content-Security-Policy": "default-src 'none'; sandbox"}
        headers["X-Content-Type-Options"] = "nosniff"
        if path.suffix in (".json", ".csv", ".md"):
            media = {".json": "application/json", ".csv": "text/csv", ".md": "text/plain"}[path.suffix]
        return FileResponse(path, media_type=media, headers=headers)

    @app.get("/incidents/{incident_id}/check/{name}", dependencies=read)
    def check_file(incident_id: str, name: str):
        return _file(console.check_file(incident_id, name))

    @app.get("/incidents/{incident_id}/report", dependencies=read)
    def report(incident_id: str):
        path = console.workdir_of(incident_id) / "report" / "report.html"
        if not path.is_file():
            raise HTTPException(404, f"incident {incident_id} has no report yet")
        return FileResponse(path, media_type="text/html", headers={"Content-Security-Policy": REPORT_CSP,
                                                                    "X-Content-Type-Options": "nosniff"})

    @app.get("/incidents/{incident_id}/report.{ext}", dependencies=read)
    def report_other(incident_id: str, ext: str):
        if ext not in ("md", "json"):
            raise HTTPException(404, "report.md or report.json")
        path = console.workdir_of(incident_id) / "report" / f"report.{ext}"
        if not path.is_file():
            raise HTTPException(404, f"incident {incident_id} has no report.{ext} yet")
        return _file(path)

    @app.get("/incidents/{incident_id}/evidence", dependencies=read, response_class=HTMLResponse)
    def evidence(request: Request, incident_id: str):
        w = console.workdir_of(incident_id)
        ev = console.evidence_status(w)
        manifest = None
        if ev.get("bundle") and (Path(ev["bundle"]) / "manifest.json").is_file():
            try:
                manifest = json.loads((Path(ev["bundle"]) / "manifest.json").read_text())
            except ValueError:
                manifest = None
        files = [f for f in (manifest or {}).get("files", []) if isinstance(f, dict)] if manifest else []
        return _page(env, "evidence.html", prefix=_prefix(request), incident_id=incident_id, ev=ev,
                     manifest=manifest or {}, files=files[:500])

    @app.post("/incidents/{incident_id}/approve", dependencies=signed_in)
    def approve(request: Request, incident_id: str, user: Any = Depends(get_user), dag_id: str = Form(""),
                run_id: str = Form(...), task_id: str = Form(...), map_index: int = Form(-1),
                decision: str = Form("approve"), reason: str = Form("")):
        """Answer one waiting approval as the signed-in person: approve, or reject with a reason (the step's
        own function records who, when and why before Airflow acts on it)."""
        _check_origin(request)
        _authorize(user, "PUT", DagAccessEntity.HITL_DETAIL, dag_id or RETRAIN_DAG)
        console.workdir_of(incident_id)
        if decision not in ("approve", "reject"):
            raise HTTPException(400, "decision must be approve or reject")
        reason = reason.strip()[:500]
        if decision == "reject" and not reason:
            return _incident_page(request, incident_id, "approve-failed",
                                  error="a rejection needs a reason: it goes into the report")
        wanted = ("approve", "approved", "yes") if decision == "approve" else ("reject", "rejected", "no")
        api = AirflowAPI(request)
        try:
            runs = _runs(api).get(incident_id, [])
            pending = [a for a in _pending_approvals(api, runs)
                       if a["run_id"] == run_id and a["task_id"] == task_id and int(a["map_index"]) == map_index
                       and (not dag_id or a["dag_id"] == dag_id)]
            if not pending:
                raise HTTPException(409, "no pending approval of this incident matches (already answered?)")
            a = pending[0]
            option = next((o for o in a["options"] if str(o).lower() in wanted), None)
            if option is None:
                raise HTTPException(409, f"the request offers no {decision} option ({a['options']})")
            r = api.patch(f"/dags/{quote(a['dag_id'], safe='')}/dagRuns/{quote(run_id, safe='')}/taskInstances/"
                          f"{quote(task_id, safe='')}/{map_index}/hitlDetails",
                          {"chosen_options": [option], "params_input": {"reason": reason} if reason else {}})
        finally:
            api.close()
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail")
            except ValueError:
                detail = r.text[:500]
            return _incident_page(request, incident_id, "approve-failed", error=f"HTTP {r.status_code}: {detail}")
        msg = "approved" if decision == "approve" else "rejected"
        return RedirectResponse(f"{_prefix(request)}/incidents/{quote(incident_id, safe='')}?msg={msg}",
                                status_code=303)

    close_dep = [Depends(requires_access_dag("PUT", DagAccessEntity.RUN))]

    @app.post("/incidents/{incident_id}/close", dependencies=close_dep)
    def close(request: Request, incident_id: str, user: Any = Depends(get_user), as_: str = Form(...),
              reason: str = Form(""), approve: str = Form("")):
        """Close the incident through the lifecycle's core close function (a false positive restores the
        target, so it needs the approval box ticked)."""
        _check_origin(request)
        console.workdir_of(incident_id)
        if as_ not in ("resolved", "false_positive"):
            raise HTTPException(400, "as_ must be resolved or false_positive")
        try:
            console.close(incident_id, as_=as_, reason=reason, actor=f"airflow:{user.get_name()}",
                          approve=approve == "yes")
        except BadInput as exc:
            return _incident_page(request, incident_id, "close-failed", error=str(exc))
        return RedirectResponse(f"{_prefix(request)}/incidents/{quote(incident_id, safe='')}?msg=closed",
                                status_code=303)

    return app
