"""Settings for the bsn control plane, driven by environment variables.

Two shapes from one module:
- embedded default (no variables set): SQLite and a file-system Celery broker under
  ``BSN_DATA_DIR`` — what ``make run`` uses on a fresh machine;
- production / tests: ``DATABASE_URL`` (PostgreSQL) and ``CELERY_BROKER_URL`` (Redis).
"""

from __future__ import annotations

import os
import secrets
import tempfile
from datetime import timedelta
from pathlib import Path

import dj_database_url

from bsn.env import env_bool, env_choice, env_float, env_int, env_keyring, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("BSN_DATA_DIR", str(BASE_DIR / ".data"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    """An explicit key wins; the embedded default keeps a random one in the data dir.

    The file is written aside with mode 0600 (``mkstemp``) and linked into place, so it is
    never readable by others, not even for a moment, and two processes starting at once
    (web, worker, beat) agree on one key: the second ``link`` fails and reads the first's.
    """
    explicit = env_str("BSN_SECRET_KEY", "")
    if explicit:
        return explicit
    key_file = DATA_DIR / "secret_key"
    if not key_file.exists():
        fd, partial = tempfile.mkstemp(dir=DATA_DIR, prefix=".secret_key-")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(50))
            try:
                os.link(partial, key_file)
            except FileExistsError:
                pass
        finally:
            os.unlink(partial)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
# Key rotation: the old key(s), comma- or newline-separated (a _FILE variant works too).
# Sessions, signed values and every secret encrypted at rest (apps/common/crypto.py)
# made with a key listed here stay readable; new ones use SECRET_KEY.
SECRET_KEY_FALLBACKS = [
    k.strip() for k in env_str("BSN_SECRET_KEY_FALLBACKS", "").replace("\n", ",").split(",") if k.strip()
]
DEBUG = env_bool("BSN_DEBUG", False)
ALLOWED_HOSTS = env_list("BSN_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI assets served locally (no CDN needed)
    "axes",  # failed-login lockouts for the API login and the Django admin (apps/tenants/login.py)
    "apps.common",
    "apps.audit",
    "apps.tenants",
    "apps.regions",
    "apps.chainapps",
    "apps.runtime",
    "apps.ordering",
    "apps.gateway",
    "apps.dcep",
    "apps.metering",  # usage per app per hour, storage and daily-volume quotas (issue 10)
    "apps.events",  # contract events read from committed blocks, one cursor per app and consumer
    "apps.webhooks",  # signed deliveries of contract events
    "apps.custody",  # platform-held app-user keys (envelope encryption)
    "apps.billing",  # price lists, invoices paid in digital currency
    "apps.portal",  # the tenant web portal (/portal/): server-rendered pages over the same services
    "apps.console",  # the operator console's dashboard (/admin/console/; docs/console.md)
]

MIDDLEWARE = [
    "apps.common.middleware.BodyLimitMiddleware",  # before anything reads a body (413)
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: turns a login refused because of a lockout into 429 + Retry-After.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "bsn.urls"
# A full DCEP batch (8,190 payments with 140-character non-ASCII memos) is about 5 MB.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("BSN_MAX_BODY_BYTES", 8 * 1024 * 1024, minimum=1024)
# JSON bodies nested deeper than this (arrays/objects) are a 400 (apps/common/parsers.py).
BSN_MAX_JSON_DEPTH = env_int("BSN_MAX_JSON_DEPTH", 64, minimum=8)
APPEND_SLASH = False
WSGI_APPLICATION = "bsn.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- database -------------------------------------------------------------------------
_default_db = f"sqlite:///{DATA_DIR / 'bsn.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(env_str("DATABASE_URL", _default_db), conn_max_age=60)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat share the file: WAL lets readers and one writer coexist and
    # IMMEDIATE transactions avoid "database is locked" upgrades mid-transaction.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Server-side parameters, and a statement run this often on one connection is prepared:
    # PostgreSQL then plans it once instead of every time (planning the token lookup's joins
    # cost four times running it). A DCEP payment: 35% less PostgreSQL CPU (docs/benchmarks.md).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"server_side_binding": True, "prepare_threshold": env_int("BSN_PG_PREPARE_THRESHOLD", 5, minimum=0) or None}
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- HTTPS (production) ------------------------------------------------------------------
# One switch for a deployment behind TLS; each part can also be set on its own.
BSN_HTTPS = env_bool("BSN_HTTPS", False)
SECURE_SSL_REDIRECT = env_bool("BSN_SSL_REDIRECT", BSN_HTTPS)
# Probes from a load balancer speak plain HTTP on the inside network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SECURE_HSTS_SECONDS = env_int("BSN_HSTS_SECONDS", 31_536_000 if BSN_HTTPS else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("BSN_HSTS_INCLUDE_SUBDOMAINS", BSN_HTTPS)
SECURE_HSTS_PRELOAD = env_bool("BSN_HSTS_PRELOAD", BSN_HTTPS)
SESSION_COOKIE_SECURE = env_bool("BSN_SESSION_COOKIE_SECURE", BSN_HTTPS)
CSRF_COOKIE_SECURE = env_bool("BSN_CSRF_COOKIE_SECURE", BSN_HTTPS)
# Trust X-Forwarded-Proto only behind a proxy that sets it (and strips a client's own).
if env_bool("BSN_PROXY_SSL_HEADER", BSN_HTTPS):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
CSRF_TRUSTED_ORIGINS = env_list("BSN_CSRF_TRUSTED_ORIGINS", [])
# A refused form under /portal/ or /admin/ is a page that says to reload and try again.
CSRF_FAILURE_VIEW = "apps.portal.errors.csrf_failure"

# --- log-in -----------------------------------------------------------------------------
# django-axes counts failed log-ins (API and Django admin) per client address and, apart,
# per username, in the database (shared by every web process); at the limit that address
# or username gets 429 + Retry-After until the cool-off has passed since its last failure.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("BSN_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(seconds=env_int("BSN_LOGIN_COOLOFF_SECONDS", 900, minimum=1))
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
# A good log-in does not clear the failures: an attacker with an account of their own
# could otherwise interleave it to keep guessing from one address.
AXES_RESET_ON_SUCCESS = False
AXES_LOCKOUT_CALLABLE = "apps.tenants.login.lockout_response"
AXES_CLIENT_IP_CALLABLE = "apps.tenants.login.client_address"
AXES_VERBOSE = False
# Proxies in front of the web process that append to X-Forwarded-For (0: use the socket
# address). The client address is the one the outermost trusted proxy saw.
BSN_TRUSTED_PROXY_COUNT = env_int("BSN_TRUSTED_PROXY_COUNT", 0, minimum=0)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("BSN_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- REST API -------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.tenants.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["apps.tenants.permissions.IsTenantMember"],
    "DEFAULT_PAGINATION_CLASS": "apps.common.pagination.Pagination",
    "PAGE_SIZE": 20,
    "DEFAULT_FILTER_BACKENDS": [
        "apps.common.filters.StrictFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "apps.common.schema.ProblemAutoSchema",
    "EXCEPTION_HANDLER": "apps.common.errors.problem_exception_handler",
    "DEFAULT_METADATA_CLASS": "apps.common.metadata.SchemaMetadata",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["apps.common.parsers.JSONParser"],
    "UNAUTHENTICATED_USER": None,
}
if DEBUG:
    REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"].append("rest_framework.renderers.BrowsableAPIRenderer")

SPECTACULAR_SETTINGS = {
    "TITLE": "bsn API",
    "DESCRIPTION": "Blockchain-as-a-Service control plane: tenants, regions, chain apps, operations.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Every PATCH here validates its own input serializer in full (no partial update of a
    # model serializer): document that, not "every field optional".
    "COMPONENT_SPLIT_PATCH": False,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "apps.common.schema.one_spelling_per_path",
        "apps.common.schema.add_links",
    ],
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # A DCEP wallet's status; without a name it collides with the other "status" enums (Status678Enum).
    "ENUM_NAME_OVERRIDES": {
        "WalletStatusEnum": "apps.dcep.models.Account.Status",
        "InvoiceStatusEnum": "apps.billing.models.Invoice.Status",
    },
}

# --- Celery ---------------------------------------------------------------------------
_broker_default = "filesystem://"
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", _broker_default)
CELERY_BROKER_TRANSPORT_OPTIONS: dict = {"visibility_timeout": env_int("BSN_VISIBILITY_TIMEOUT", 900)}
if CELERY_BROKER_URL.startswith("filesystem://"):
    _queue_dir = DATA_DIR / "broker"
    (_queue_dir / "queue").mkdir(parents=True, exist_ok=True)
    (_queue_dir / "processed").mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir / "queue"),
        "data_folder_out": str(_queue_dir / "queue"),
        "processed_folder": str(_queue_dir / "processed"),
        "store_processed": False,
        "control_folder": str(_queue_dir / "control"),
        "polling_interval": 0.1,
    }
CELERY_TASK_ALWAYS_EAGER = env_bool("BSN_CELERY_EAGER", False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
# The queue of operation starts and beat tasks (region steps go to region.<code>). Tests give
# each pytest process its own, so two runs sharing one Redis never take each other's tasks.
CELERY_TASK_DEFAULT_QUEUE = env_str("BSN_DEFAULT_QUEUE", "default")
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env_int("BSN_TASK_TIME_LIMIT", 600, minimum=10)
CELERY_TASK_SOFT_TIME_LIMIT = env_int("BSN_TASK_SOFT_TIME_LIMIT", 540, minimum=5)
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# --- bsn ------------------------------------------------------------------------------
# docker | process | auto (docker if the engine answers, else process) for the demo regions.
BSN_DEFAULT_DRIVER = env_choice("BSN_DEFAULT_DRIVER", "auto", {"auto", "docker", "process"})
BSN_DOCKER_BASE_URL = env_str("BSN_DOCKER_BASE_URL", "unix:///var/run/docker.sock")
BSN_DOCKER_TIMEOUT = env_int("BSN_DOCKER_TIMEOUT", 30, minimum=1)
# Regions the ordering service's three members may go to (codes, comma separated). Blank:
# the Docker regions, else one Swarm region (its hosts spread the members). Only where the
# members are first placed: a placed member stays where it is.
BSN_ORDERING_REGIONS = env_list("BSN_ORDERING_REGIONS", [])
# Swarm regions: seconds between a node's container health checks, which gate rolling
# updates and Swarm's "running" (each check is a short Python process: ~60 ms of CPU).
BSN_SWARM_HEALTH_INTERVAL = env_int("BSN_SWARM_HEALTH_INTERVAL", 10, minimum=1)
# The engine the ledger image is built on (bsn_images build); regions on other engines get
# it streamed from here by content (apps/runtime/image_sync.py). Blank: none, every engine
# must hold the image itself.
BSN_IMAGE_SOURCE_URL = env_str("BSN_IMAGE_SOURCE_URL", BSN_DOCKER_BASE_URL)
# A Docker region reached over tcp:// without TLS is refused unless this is set (development).
BSN_ALLOW_INSECURE_ENGINES = env_bool("BSN_ALLOW_INSECURE_ENGINES", False)
BSN_LEDGER_IMAGE = env_str("BSN_LEDGER_IMAGE", "bsn/ledger:latest")
BSN_NODE_HEALTH_TIMEOUT = env_float("BSN_NODE_HEALTH_TIMEOUT", 60.0)
# Upgrade and scale: how long one node may take to come back (or, added, to start) healthy
# at the chain head; past it the operation fails naming the node, and no later node is touched.
BSN_LIFECYCLE_NODE_TIMEOUT = env_float("BSN_LIFECYCLE_NODE_TIMEOUT", 300.0)
BSN_OPERATION_MAX_ATTEMPTS = env_int("BSN_OPERATION_MAX_ATTEMPTS", 5, minimum=1)
# A running operation whose heartbeat is older than this is taken over by another worker.
BSN_OPERATION_STALE_SECONDS = env_int("BSN_OPERATION_STALE_SECONDS", 120, minimum=5)
BSN_RECONCILE_INTERVAL = env_float("BSN_RECONCILE_INTERVAL", 30.0)
# One repairing pass a region at a time: a pass holds its region's lease this long at most
# (one whose worker died frees the region after it; a longer pass may overlap the next).
BSN_RECONCILE_LEASE = env_float("BSN_RECONCILE_LEASE", 120.0)
# Node calls (health probes, /chain reads) a reconcile pass makes at once: a pass over 200
# nodes waited 2 s on them one after another.
BSN_RECONCILE_CONCURRENCY = env_int("BSN_RECONCILE_CONCURRENCY", 16, minimum=1)
# A step that no worker has taken from its region's queue this long is said to be waiting (log, steps).
BSN_STEP_PICKUP_SECONDS = env_float("BSN_STEP_PICKUP_SECONDS", 30.0)
# A worker serving every region (bsn_worker without region codes) looks for new regions this often.
BSN_WORKER_FOLLOW_INTERVAL = env_float("BSN_WORKER_FOLLOW_INTERVAL", 2.0)
# Workers restart a node at once when its region's engine reports it died or was removed
# (apps/chainapps/healing.py); the periodic reconcile pass stays the backstop.
BSN_HEAL_ON_EVENTS = env_bool("BSN_HEAL_ON_EVENTS", True)
# Node facts in the API (state, chain height/head/proposer) older than this get a refresh
# queued on the region's worker when read, and after each transaction through the gateway.
BSN_NODE_FACTS_MAX_AGE = env_float("BSN_NODE_FACTS_MAX_AGE", 5.0)
# API tokens: the default lifetime, the longest anyone may ask for, the lifetime of a
# token from POST /auth/login, and how many log-in tokens one member keeps (older ones are
# revoked at the next log-in).
BSN_TOKEN_MAX_TTL_DAYS = env_int("BSN_TOKEN_MAX_TTL_DAYS", 365, minimum=1)
BSN_TOKEN_TTL_DAYS = env_int("BSN_TOKEN_TTL_DAYS", min(90, BSN_TOKEN_MAX_TTL_DAYS), minimum=1)
BSN_LOGIN_TOKEN_TTL_DAYS = env_int("BSN_LOGIN_TOKEN_TTL_DAYS", min(7, BSN_TOKEN_MAX_TTL_DAYS), minimum=1)
BSN_LOGIN_TOKENS_MAX = env_int("BSN_LOGIN_TOKENS_MAX", 5, minimum=1)
if max(BSN_TOKEN_TTL_DAYS, BSN_LOGIN_TOKEN_TTL_DAYS) > BSN_TOKEN_MAX_TTL_DAYS:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("BSN_TOKEN_TTL_DAYS and BSN_LOGIN_TOKEN_TTL_DAYS must not exceed BSN_TOKEN_MAX_TTL_DAYS")
BSN_PROCESS_DIR = DATA_DIR / "process-nodes"
# Gateway → node: connect timeout (an unreachable node is skipped for the next one) and
# read timeouts (a submission waits for its block; reads answer at once).
BSN_GATEWAY_CONNECT_TIMEOUT = env_float("BSN_GATEWAY_CONNECT_TIMEOUT", 1.0)
BSN_GATEWAY_SUBMIT_TIMEOUT = env_float("BSN_GATEWAY_SUBMIT_TIMEOUT", 15.0)
BSN_GATEWAY_READ_TIMEOUT = env_float("BSN_GATEWAY_READ_TIMEOUT", 5.0)
BSN_GATEWAY_MAX_BATCH = env_int("BSN_GATEWAY_MAX_BATCH", 500, minimum=1)
# Key custody (apps/custody, docs/custody.md): master keys that wrap each tenant's data key,
# "<id>:<base64 of 32 bytes>" separated by commas or newlines; the FIRST wraps new data keys
# and is the one `bsn_custody rotate-master` rewraps onto; the others only unwrap. Empty:
# one key derived from SECRET_KEY (id "secret-key"), for the embedded default only.
BSN_CUSTODY_MASTER_KEYS = env_keyring("BSN_CUSTODY_MASTER_KEYS")
# Where the gateway's TPS buckets live (apps/gateway/ratelimit.py): Redis, shared by every
# web process; default the broker when it is Redis; anything else keeps them per process.
BSN_RATE_LIMIT_URL = env_str(
    "BSN_RATE_LIMIT_URL", CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else ""
)
# Usage metering (apps/metering, docs/metering.md). Gateway counters and the daily volume
# counters live in Redis (default: the TPS buckets' Redis; without one, counts go straight
# to the database). The prefix keeps installations sharing a Redis apart.
BSN_METERING_REDIS_URL = env_str("BSN_METERING_REDIS_URL", BSN_RATE_LIMIT_URL)
BSN_METERING_REDIS_PREFIX = env_str("BSN_METERING_REDIS_PREFIX", "bsn:meter:")
# Seconds between flushes of the counters into UsageHour, and between node scrapes.
BSN_METERING_FLUSH_INTERVAL = env_float("BSN_METERING_FLUSH_INTERVAL", 60.0)
BSN_METERING_SCRAPE_INTERVAL = env_float("BSN_METERING_SCRAPE_INTERVAL", 60.0)
# Node seconds: two scrapes further apart than this count only this much (the node may
# have been down in between, unseen).
BSN_METERING_MAX_GAP = env_int("BSN_METERING_MAX_GAP", 180, minimum=1)
BSN_METERING_SCRAPE_THREADS = env_int("BSN_METERING_SCRAPE_THREADS", 8, minimum=1)
# Days a flushed batch's claim is kept (a batch key older than this would be added again).
BSN_METERING_FLUSH_KEEP_DAYS = env_int("BSN_METERING_FLUSH_KEEP_DAYS", 30, minimum=1)
# Usage API: the most buckets one answer may hold.
BSN_USAGE_MAX_BUCKETS = env_int("BSN_USAGE_MAX_BUCKETS", 744, minimum=1)
# Bearer token a Prometheus server sends to GET /metrics (staff sessions need none); unset: staff only.
BSN_METRICS_TOKEN = env_str("BSN_METRICS_TOKEN", "")
# Reconciler: an app is `degraded` when a node's chain is more than this many blocks
# behind the highest node of the app (0: every node at exactly the same head).
# Host ports ledger nodes are published on (one per node, kept across restarts). Keep it
# outside the kernel's ephemeral range (net.ipv4.ip_local_port_range, 32768-60999).
BSN_NODE_PORT_RANGE = env_str("BSN_NODE_PORT_RANGE", "20000-29999")
# Blocks an etcd-ordered app keeps in the ordering service; older ones come from peers.
BSN_ETCD_BLOCK_WINDOW = env_int("BSN_ETCD_BLOCK_WINDOW", 10000, minimum=1)
BSN_CHAIN_MAX_LAG = env_int("BSN_CHAIN_MAX_LAG", 2, minimum=0)

# --- DCEP -----------------------------------------------------------------------------
# Wallet tiers: (balance cap, single-payment cap, daily outgoing cap) in fen; None: no cap.
# Defaults are the publicly reported e-CNY wallet classes; each tier can be overridden with
# BSN_DCEP_TIER<n>_CAPS="balance,single,daily" (fen; "none" for no cap).
_DCEP_TIER_DEFAULTS = {
    1: (None, None, None),
    2: (50_000_000, 5_000_000, 10_000_000),
    3: (2_000_000, 500_000, 500_000),
    4: (1_000_000, 200_000, 500_000),
}


def _tier_caps(tier: int) -> tuple[int | None, int | None, int | None]:
    from django.core.exceptions import ImproperlyConfigured

    raw = env_str(f"BSN_DCEP_TIER{tier}_CAPS", "")
    if not raw:
        return _DCEP_TIER_DEFAULTS[tier]
    parts = [p.strip().lower() for p in raw.split(",")]
    try:
        caps = tuple(None if p == "none" else int(p) for p in parts)
    except ValueError as exc:
        raise ImproperlyConfigured(f"BSN_DCEP_TIER{tier}_CAPS={raw!r}: three integers (fen) or 'none'") from exc
    if len(caps) != 3 or any(c is not None and c <= 0 for c in caps):
        raise ImproperlyConfigured(f"BSN_DCEP_TIER{tier}_CAPS={raw!r}: three positive integers (fen) or 'none'")
    return caps  # type: ignore[return-value]


BSN_DCEP_TIERS = {tier: _tier_caps(tier) for tier in _DCEP_TIER_DEFAULTS}
BSN_DCEP_SETTLEMENT_INTERVAL = env_float("BSN_DCEP_SETTLEMENT_INTERVAL", 300.0)
BSN_DCEP_HOLD_SWEEP_INTERVAL = env_float("BSN_DCEP_HOLD_SWEEP_INTERVAL", 5.0)
# Idempotency keys are kept at least this long (the issue asks for >= 24 h).
BSN_DCEP_IDEMPOTENCY_TTL_HOURS = env_int("BSN_DCEP_IDEMPOTENCY_TTL_HOURS", 48, minimum=24)
# An in-flight key older than this belongs to a request that died: a resend takes it over.
BSN_DCEP_IN_FLIGHT_STALE_SECONDS = env_int("BSN_DCEP_IN_FLIGHT_STALE_SECONDS", 60, minimum=5)
# A concurrent duplicate waits this long for the first request before a 409.
BSN_DCEP_IN_FLIGHT_WAIT_SECONDS = env_float("BSN_DCEP_IN_FLIGHT_WAIT_SECONDS", 5.0)
BSN_DCEP_MAX_BATCH = env_int("BSN_DCEP_MAX_BATCH", 8190, minimum=1)
# Seconds a money call waits for the tier-1 chain before answering 503 with Retry-After.
BSN_DCEP_TIER1_WAIT = env_float("BSN_DCEP_TIER1_WAIT", 0.0)

# --- Contract events and webhooks (docs/events.md, docs/webhooks.md) -------------------
# How often the beat pumps every app with an event consumer; blocks per node read; reads per pump.
BSN_EVENTS_PUMP_INTERVAL = env_float("BSN_EVENTS_PUMP_INTERVAL", 2.0)
BSN_EVENTS_BLOCKS_PER_READ = env_int("BSN_EVENTS_BLOCKS_PER_READ", 100, minimum=1)
BSN_EVENTS_PUMP_ROUNDS = env_int("BSN_EVENTS_PUMP_ROUNDS", 10, minimum=1)
# Webhook URLs may name private, loopback, link-local, multicast or reserved addresses (SSRF): development only.
BSN_WEBHOOKS_ALLOW_PRIVATE = env_bool("BSN_WEBHOOKS_ALLOW_PRIVATE", False)
BSN_WEBHOOKS_CONNECT_TIMEOUT = env_float("BSN_WEBHOOKS_CONNECT_TIMEOUT", 3.0)
BSN_WEBHOOKS_READ_TIMEOUT = env_float("BSN_WEBHOOKS_READ_TIMEOUT", 5.0)
# Retries: first after BASE s, doubling up to MAX s (±20 % jitter), for WINDOW s from the first attempt.
BSN_WEBHOOKS_RETRY_BASE_S = env_float("BSN_WEBHOOKS_RETRY_BASE_S", 10.0)
BSN_WEBHOOKS_RETRY_MAX_S = env_float("BSN_WEBHOOKS_RETRY_MAX_S", 3600.0)
BSN_WEBHOOKS_RETRY_WINDOW_S = env_float("BSN_WEBHOOKS_RETRY_WINDOW_S", 86400.0)
BSN_WEBHOOKS_DISPATCH_INTERVAL = env_float("BSN_WEBHOOKS_DISPATCH_INTERVAL", 5.0)
# Finished deliveries stay in the log this many days (pending ones until they finish).
BSN_WEBHOOKS_LOG_DAYS = env_int("BSN_WEBHOOKS_LOG_DAYS", 30, minimum=1)
# Billing (docs/billing.md): invoices are due this many days after they are issued; an unpaid
# one is retried every BSN_BILLING_RETRY_HOURS and, past BSN_BILLING_GRACE_DAYS after its due
# date, the tenant's apps are stopped until it is paid. A month is closed this many hours into
# the next one (metering flushes the last hour's counters first).
BSN_BILLING_DUE_DAYS = env_int("BSN_BILLING_DUE_DAYS", 15, minimum=0)
BSN_BILLING_GRACE_DAYS = env_int("BSN_BILLING_GRACE_DAYS", 7, minimum=0)
BSN_BILLING_RETRY_HOURS = env_int("BSN_BILLING_RETRY_HOURS", 24, minimum=1)
BSN_BILLING_CLOSE_AFTER_HOURS = env_int("BSN_BILLING_CLOSE_AFTER_HOURS", 6, minimum=0)
# The platform's revenue wallet (16 digits) that invoices are paid into; blank: the one active
# corporate wallet held by the platform tenant.
BSN_BILLING_REVENUE_WALLET = env_str("BSN_BILLING_REVENUE_WALLET", "")
BSN_BILLING_INTERVAL = env_float("BSN_BILLING_INTERVAL", 3600.0)

CELERY_BEAT_SCHEDULE = {
    "reconcile-regions": {"task": "apps.chainapps.tasks.reconcile_all", "schedule": BSN_RECONCILE_INTERVAL},
    "ordering-heal": {"task": "apps.ordering.tasks.ordering_heal", "schedule": BSN_RECONCILE_INTERVAL},
    "resume-stale-operations": {
        "task": "apps.chainapps.tasks.resume_stale_operations",
        "schedule": max(5.0, BSN_OPERATION_STALE_SECONDS / 4),
    },
    "operations-waiting": {"task": "apps.chainapps.tasks.operations_waiting", "schedule": 10.0},
    "dcep-settle": {"task": "apps.dcep.tasks.settlement_scheduled", "schedule": BSN_DCEP_SETTLEMENT_INTERVAL},
    "dcep-expire-holds": {"task": "apps.dcep.tasks.holds_expire", "schedule": BSN_DCEP_HOLD_SWEEP_INTERVAL},
    "dcep-tier1-resolve": {"task": "apps.dcep.tasks.tier1_resolve", "schedule": 30.0},
    "dcep-idempotency-purge": {"task": "apps.dcep.tasks.idempotency_purge", "schedule": 3600.0},
    "events-pump": {"task": "apps.events.tasks.events_pump_all", "schedule": BSN_EVENTS_PUMP_INTERVAL},
    "webhooks-dispatch": {"task": "apps.webhooks.tasks.webhooks_dispatch", "schedule": BSN_WEBHOOKS_DISPATCH_INTERVAL},
    "webhooks-purge": {"task": "apps.webhooks.tasks.webhooks_purge", "schedule": 3600.0},
    "billing-close-month": {"task": "apps.billing.tasks.month_close", "schedule": BSN_BILLING_INTERVAL},
    "billing-pay-due": {"task": "apps.billing.tasks.payments_due", "schedule": BSN_BILLING_INTERVAL},
    "billing-suspensions": {"task": "apps.billing.tasks.suspensions_enforce", "schedule": BSN_BILLING_INTERVAL},
    "metering-flush": {"task": "apps.metering.tasks.counters_flush", "schedule": BSN_METERING_FLUSH_INTERVAL},
    "metering-scrape": {"task": "apps.metering.tasks.nodes_scrape", "schedule": BSN_METERING_SCRAPE_INTERVAL},
}
