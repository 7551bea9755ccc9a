#
# Gunicorn configuration for Sluice: gevent workers streaming Server-Sent Events behind nginx.
#
#   gunicorn -c deploy/gunicorn.conf.py wsgi:app
#
# Flat Python, read by gunicorn's master at start and again on every reload (SIGHUP). Anything
# given on the command line (-b, -w, --graceful-timeout, ...) wins over the values below.
# Every number that matters can come from the environment (/etc/sluice/env under systemd), so
# this file rarely needs editing. See docs/deploy.md for the whole picture.
#

import importlib.util
import os
import shutil
import sys
import tempfile


def _env_int(name, default):
    # As app/config.py reads its integers: "3" and "3.0" are 3; "2.5", "inf" or "-1" stop the
    # start (truncating "2.5" to 2 would run a setting nobody asked for). Not imported from the
    # app: importing the `app` package here would load it into the master (see preload_app).
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value.is_integer() or value < 0:
        raise SystemExit(f"{name} must be a whole number of seconds or a count, got {raw!r}")
    return int(value)


def _app_module(relpath):
    # A module of the app with no app imports, loaded from its file: importing the `app` package
    # in the master would load Flask, the SDKs and ssl before any worker's gevent patching (the
    # preload_app trap below). Loaded once per master (this file is read again on reload).
    name = "_sluice_" + relpath.replace("/", "_").removesuffix(".py")
    module = sys.modules.get(name)
    if module is None:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "app", *relpath.split("/"))
        spec = importlib.util.spec_from_file_location(name, path)
        module = sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


#
# Server socket
#
#   bind - Where to listen. Loopback by default: nginx is the only client. For nginx on
#       another machine, bind a private address ("10.0.0.5:8000") and firewall it, or a
#       unix socket ("unix:/run/sluice/gunicorn.sock") when nginx is on this host.
#
#   backlog - Connections the kernel queues while every worker is busy accepting.
#

bind = os.environ.get("SLUICE_BIND", "127.0.0.1:8000")
backlog = 2048

#
# Worker processes
#
#   worker_class - Sluice's worker (app/process/worker.py): gunicorn's gevent worker, one
#       greenlet per connection, so one process holds hundreds of open streams that mostly
#       wait on the model; with what a graceful stop or reload needs as methods of its own
#       (stop accepting, hold the worker for the drain, close keep-alive connections, close a
#       connection whose stream the app writes itself), and the worker-start step (freezing
#       the loaded app's heap for the garbage collector). The app's wsgi.py patches the
#       standard library first thing; the worker patches it too. Loaded from its file, not as
#       `app.process.worker` (that would import the app into the master: see preload_app), so
#       a change to that file needs a restart, not a reload. Plain `-k gevent` still works
#       (the app then reaches the same things through gunicorn's internals, and counts it in
#       sluice_fast_path_fallbacks_total).
#
#   workers - Processes. SLUICE_WORKERS, else WEB_CONCURRENCY (Heroku-style), else: the
#       number of CPUs when SLUICE_REDIS_URL is set, and 1 when it is not. More than one
#       needs Redis for cancel and resume to reach the generation wherever it runs (see
#       when_ready below), so without it the default stays on the one setup that works.
#
#   worker_connections - Connections one worker holds at once. Above SLUICE_MAX_STREAMS, so
#       that the stream after the last allowed one is answered 503 + Retry-After by the app
#       (and /healthz, /cancel and /metrics still get through) instead of waiting unanswered
#       in the accept queue.
#
#   timeout - The worker heartbeat, NOT a request timeout: with gevent a worker notifies the
#       master every second while its event loop runs, however long the streams are. A worker
#       silent this long has its loop blocked (a CPU-bound call, a non-patched C library)
#       and is killed and replaced.
#
#   graceful_timeout - On reload (HUP) or stop (TERM), how long an old worker may keep
#       serving its open streams before it is killed. Matched to the longest stream by
#       default: SLUICE_MAX_DURATION (the app's hard cap on a generation) plus a margin, so
#       a deploy never cuts an answer short. The app reads it from its worker (with or
#       without this file) and keeps a margin (a quarter of it, 1 to 5 s): after that it
#       ends what still runs with a `cancelled` event, reason `shutdown`, and `[DONE]`, so
#       that every client gets a terminal event before the worker goes away.
#       SLUICE_SHUTDOWN_GRACE_SECONDS can only shorten that deadline.
#       A reload (systemctl reload) does not wait for this: the old workers serve until a new
#       one has booted (see the hooks below), then the new ones serve while the old ones
#       drain. A stop does, so systemd's TimeoutStopSec must be larger.
#       Lower SLUICE_GRACEFUL_TIMEOUT for faster stops at the price of cut answers.
#
#   keepalive - Seconds an idle keep-alive connection stays open, AND (gevent worker) the
#       most a request line and headers may take to arrive, on every request of a connection:
#       a client that drips header bytes (slowloris), or sends one request and sits idle, is
#       cut off after this. Short, for a gunicorn reached directly; longer than nginx's upstream
#       keepalive_timeout (4s in deploy/nginx/sluice.conf), so nginx always closes first and
#       never sends a request on a socket gunicorn is closing. Never 0: with keepalive off,
#       gunicorn reads a request's headers with no time limit at all.
#
#   max_requests - Off: a recycled worker would end its streams for nothing.
#
#   preload_app - Off, and it must stay off. With preload the app is imported in the master
#       before the fork, BEFORE the gevent worker calls monkey.patch_all(): the app's
#       sockets, locks, SSL contexts and HTTP clients are then the unpatched, blocking ones,
#       shared by every worker, and one stream blocks a whole worker. It would also create
#       the Prometheus metrics before PROMETHEUS_MULTIPROC_DIR is set (see on_starting).
#

worker_class = _app_module("process/worker.py").Worker
_shared = bool(os.environ.get("SLUICE_REDIS_URL", "").strip())
workers = _env_int("SLUICE_WORKERS", _env_int("WEB_CONCURRENCY", (os.cpu_count() or 1) if _shared else 1))
worker_connections = _env_int("SLUICE_WORKER_CONNECTIONS", _env_int("SLUICE_MAX_STREAMS", 1000) + 100)
timeout = 30
graceful_timeout = _env_int("SLUICE_GRACEFUL_TIMEOUT", _env_int("SLUICE_MAX_DURATION", 600) + 10)
keepalive = 5
max_requests = 0
preload_app = False

#
# Security
#
#   limit_request_line - Longest request line. GET /stream carries the prompt in its URL;
#       longer ones are answered 414 by gunicorn (POST /streams takes any prompt up to the
#       1 MiB body limit). nginx's large_client_header_buffers (8k) is above this.
#
#   limit_request_fields, limit_request_field_size - At most 50 header fields of at most 8 KiB
#       each (a browser sends ~20, nginx adds 5): one request's headers hold at most ~400 KiB
#       of a worker's memory. Beyond, 400 from gunicorn.
#
#   None of these bounds how many connections one client opens, nor a request body sent
#   slowly: gunicorn has no setting for either. nginx (or another proxy with header, body and
#   idle timeouts, and limit_conn) must be in front of any gunicorn that clients can reach
#   (docs/security.md, "What needs nginx in front").
#
#   forwarded_allow_ips - Who may tell gunicorn the scheme (X-Forwarded-Proto: https ->
#       wsgi.url_scheme). Only nginx: loopback, or FORWARDED_ALLOW_IPS (comma-separated
#       addresses or networks) when nginx runs on another machine. The client address
#       (X-Forwarded-For) is handled by the app, only with SLUICE_PROXY_COUNT=1 (the number
#       of proxies in front: werkzeug's ProxyFix) and only from these same addresses.
#

limit_request_line = 4094
limit_request_fields = 50
limit_request_field_size = 8190
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

#
# Logging
#
#   errorlog - gunicorn's own log, and the app's JSON lines (app.observability.logging), on
#       stderr: journald (systemd) or the container runtime collects it.
#
#   accesslog - Off: nginx keeps the access log, with the real client address and the
#       stream's full duration. SLUICE_ACCESS_LOG=- turns gunicorn's on (stdout), with the
#       path but not the query string: GET /stream carries the prompt there (and a key a
#       client put in a URL by mistake, refused by the app, must not be kept either).
#

errorlog = "-"
loglevel = os.environ.get("SLUICE_LOG_LEVEL", "info").lower()
accesslog = os.environ.get("SLUICE_ACCESS_LOG") or None
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms "%(a)s"'

#
# Process naming and control
#
#   proc_name - Shows in ps/top as "gunicorn: worker [sluice]".
#
#   control_socket - gunicorn's control socket (gunicornc). Only where SLUICE_CONTROL_SOCKET
#       names a path (the systemd unit: /run/sluice/gunicorn.ctl). Its default, one shared
#       path per user, would let two instances on one host take each other's socket.
#

proc_name = "sluice"
control_socket = os.environ.get("SLUICE_CONTROL_SOCKET", "") or "gunicorn.ctl"
control_socket_disable = not os.environ.get("SLUICE_CONTROL_SOCKET")


#
# Server hooks
#
#   on_starting - In the master, once, before anything else: the Prometheus directory, and
#       the board that a reload's workers share (app/process/handover.py).
#   when_ready - The sockets are bound: say what runs, and warn about a multi-worker
#       setup without a shared backend.
#   on_reload, pre_fork, post_worker_init - A reload's handover: on HUP gunicorn forks the
#       new workers and SIGTERMs the old ones at once, and a new worker needs seconds of CPU
#       (the SDK imports) before it accepts. The master marks the old generation on the board
#       (on_reload), every worker gets the board (pre_fork) and marks itself booted
#       (post_worker_init), and an old worker keeps accepting until a new one has booted
#       (at most 60 s), so that no request waits for a boot. Without these hooks (plain
#       `gunicorn -k gevent wsgi:app`) the old workers stop accepting at once.
#   worker_int - A worker got SIGINT or SIGQUIT (quick stop: streams are cut, no terminal
#       event).
#   worker_abort - A worker got SIGABRT: the master killed it for missing its heartbeat.
#   child_exit - In the master, after a worker died: drop its live Prometheus gauges.
#
# No hook is needed for a graceful stop or reload: the app finds the gevent worker it runs in
# when it loads (app.process.shutdown.install; worker_class above, or any gevent worker), and
# on SIGTERM stops accepting, closes its idle keep-alive connections (nginx retries a request
# that meets one on a fresh connection: a live worker), and drains its streams until a
# deadline inside this worker's graceful_timeout.
#

_PROM_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _prepare_prometheus_dir(server):
    """Create or empty the multiprocess directory, and export it before any worker exists.

    Each worker writes its metrics to files named after its pid in this directory; files
    left by an earlier run would be added to this run's counters, so it starts empty. Only
    prometheus_client's own *.db files are removed from a directory the operator named (the
    systemd unit's RuntimeDirectory: /run/sluice/prometheus); without one, a private temporary
    directory is made.
    """
    path = os.environ.get(_PROM_ENV, "").strip()
    if path:
        os.makedirs(path, mode=0o700, exist_ok=True)
        for name in os.listdir(path):
            if name.endswith(".db"):
                os.unlink(os.path.join(path, name))
    else:
        path = tempfile.mkdtemp(prefix="sluice-prometheus-")
        os.environ[_PROM_ENV] = path
    server.log.info("Prometheus multiprocess directory: %s", path)


def on_starting(server):
    _prepare_prometheus_dir(server)
    _board(server)


def when_ready(server):
    cfg = server.cfg
    server.log.info(
        "Sluice ready: %d gevent worker(s) x %d connections, graceful timeout %ss",
        cfg.workers, cfg.worker_connections, cfg.graceful_timeout,
    )
    if cfg.workers > 1 and not os.environ.get("SLUICE_REDIS_URL", "").strip():
        server.log.warning(
            "!!! %d workers and no SLUICE_REDIS_URL: every worker keeps its generations to "
            "itself. POST /cancel and reconnects (Last-Event-ID) that land on another worker "
            "will not find their stream. Set SLUICE_REDIS_URL, or run one worker.",
            cfg.workers,
        )


def worker_int(worker):
    worker.log.warning("worker %s: quick stop (SIGINT/SIGQUIT); open streams are cut", worker.pid)


def worker_abort(worker):
    worker.log.error(
        "worker %s: aborted (SIGABRT) after %ss without a heartbeat; its event loop was "
        "blocked. Open streams on it are lost.",
        worker.pid, worker.cfg.timeout,
    )


def _board(server):
    board = getattr(server, "sluice_board", None)
    if board is None:
        board = server.sluice_board = _app_module("process/handover.py").Board()
    return board


def on_reload(server):
    _board(server).reload_begins(server.worker_age)


def pre_fork(server, worker):
    worker.sluice_board = _board(server)  # the attribute the app's shutdown looks for


def post_worker_init(worker):
    board = getattr(worker, "sluice_board", None)
    if board is not None:
        board.booted(worker.age)


def child_exit(server, worker):
    # The app's own metrics.mark_process_dead (see _app_module).
    _app_module("observability/metrics.py").mark_process_dead(worker.pid)


def on_exit(server):
    # The temporary directory made by _prepare_prometheus_dir is ours to remove; one the
    # operator named (a RuntimeDirectory) is systemd's.
    path = os.environ.get(_PROM_ENV, "")
    if os.path.basename(path).startswith("sluice-prometheus-"):
        shutil.rmtree(path, ignore_errors=True)
