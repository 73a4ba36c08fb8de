#!/usr/bin/env python3
"""Checks of the deployment files that no schema catches: does every shop
process get the settings its topology needs, and does every Kubernetes
workload carry probes, resources and the locked-down security context?

    check-deploy.py compose compose.yaml
    check-deploy.py k8s NAME RENDERED.yaml     (the output of kubectl kustomize)

The topology rules (README, "Extracting a module"): a process serves
APP__MODULES__ENABLED (default: all six); an enabled module whose mode is
remote is forwarded to its URL, which must reach a process serving it; a
module that this process calls but does not serve needs mode remote and a
URL (everyone calls the user module for its keys; order calls catalog,
inventory and payment); a process where not all six modules are local uses
RabbitMQ; a process with a local module needs DATABASE_URL (production);
the user module needs the signing key, every process the service key; the
payment module the provider's URL. A process that another forwards client
requests to trusts that gateway (rate_limit.trusted_proxies), or its rate
limits would count the gateway as one client.

Kubernetes also: email over SMTP with the password from a Secret (files
would fill the pod's emptyDir); module processes probe readiness with
?scope=process, entry processes with the full check; the termination grace
period covers preStop, the server's shutdown and a background task's stop;
every shop pod carries the Prometheus scrape annotations and a `service`
label equal to its OTEL_SERVICE_NAME; a NetworkPolicy selects every pod,
and the NetworkPolicies (evaluated: same namespace, ingress and egress)
let every call above through on the HTTP port, the payment module's to a
provider running in the cluster too, and keep a pod that is not the shop's
({app: other}, in the same namespace) away from every shop process.

Prints one line per problem and exits 1 if there is any. Needs PyYAML.
"""

import ipaddress
import re
import sys
from urllib.parse import urlsplit

import yaml

# In the order the shop starts them when APP__MODULES__ENABLED is unset.
MODULES = ["user", "catalog", "notification", "inventory", "payment", "order"]
CALLS = {"order": ["catalog", "inventory", "payment"]}
SECRET = object()  # an env var whose value comes from a Secret
KEYS_DIR = "/var/lib/shop/keys"
# Commands that run before any settings load (app/src/main.rs).
NO_SETTINGS = {"keys", "openapi", "sandbox-provider"}
SHUTDOWN_SECS = 30  # server.shutdown_timeout_secs
TASK_STOP_SECS = 10  # what app/src/startup.rs gives each background task

problems = []


def problem(where, msg):
    problems.append(f"{where}: {msg}")


def enabled_modules(env):
    value = env.get("APP__MODULES__ENABLED")
    if value is None:
        return list(MODULES)
    names = [m.strip() for m in str(value).split(",") if m.strip()]
    return names


def mode(env, module):
    return env.get(f"APP__MODULES__{module.upper()}__MODE", "local")


def local_modules(env):
    return [m for m in enabled_modules(env) if mode(env, m) == "local"]


def reached(env):
    """The modules this process reaches in another process."""
    enabled, local = enabled_modules(env), local_modules(env)
    needed = {m for m in enabled if mode(env, m) == "remote"}  # forwarded (gateway role)
    if enabled and "user" not in local:
        needed.add("user")  # token keys
    return needed | {dep for m in local for dep in CALLS.get(m, []) if dep not in local}


def check_topology(where, env, serves):
    """Checks one serving process's env. `serves(url, where)` returns the
    modules served locally at `url`, or None after reporting why not."""
    enabled = enabled_modules(env)
    for m in enabled:
        if m not in MODULES:
            problem(where, f"APP__MODULES__ENABLED names an unknown module `{m}`")
    local = local_modules(env)
    for m in sorted(reached(env)):
        key = f"APP__MODULES__{m.upper()}"
        if mode(env, m) != "remote":
            problem(where, f"calls the {m} module, which it does not serve: set {key}__MODE=remote")
            continue
        url = env.get(f"{key}__URL")
        if not url:
            problem(where, f"{key}__MODE is remote but {key}__URL is unset")
            continue
        there = serves(url, where)
        if there is not None and m not in there:
            problem(where, f"{key}__URL={url} reaches a process that does not serve {m} (it serves {sorted(there) or 'nothing'})")
    if set(local) != set(MODULES):
        if env.get("APP__EVENTS__TRANSPORT") != "rabbitmq":
            problem(where, f"serves {sorted(local) or 'no module'} (not all six): needs APP__EVENTS__TRANSPORT=rabbitmq")
        if not env.get("APP__EVENTS__RABBITMQ__URL"):
            problem(where, "uses RabbitMQ but APP__EVENTS__RABBITMQ__URL is unset")
    if local and not env.get("DATABASE_URL"):
        problem(where, f"serves {sorted(local)}: needs DATABASE_URL")
    if enabled and not env.get("APP__AUTH__SERVICE_KEY_FILE"):
        problem(where, "needs APP__AUTH__SERVICE_KEY_FILE")
    if "user" in local and not env.get("APP__AUTH__SIGNING_KEY_FILE"):
        problem(where, "serves the user module: needs APP__AUTH__SIGNING_KEY_FILE")
    if "payment" in local and not env.get("APP__PAYMENT__PROVIDER_URL"):
        problem(where, "serves the payment module: needs APP__PAYMENT__PROVIDER_URL")
    return local


def forwarded(env):
    """The modules this process forwards client requests for (a gateway)."""
    return [m for m in enabled_modules(env) if mode(env, m) == "remote"]


def is_entry(env):
    """A process clients reach directly: the monolith or a gateway."""
    return set(local_modules(env)) == set(MODULES) or bool(forwarded(env))


def trusts(env, address):
    """Whether rate_limit.trusted_proxies names `address` (an address, or
    None: any entry at all)."""
    entries = [e.strip() for e in str(env.get("APP__RATE_LIMIT__TRUSTED_PROXIES") or "").split(",") if e.strip()]
    if address is None:
        return bool(entries)
    for e in entries:
        try:
            if ipaddress.ip_address(address) in ipaddress.ip_network(e, strict=False):
                return True
        except ValueError:
            pass
    return False


def check_settings_load(where, env):
    """A `shop` command (but those in NO_SETTINGS) loads the settings
    first; in production a local module asks for a database."""
    if local_modules(env) and not env.get("DATABASE_URL"):
        problem(where, "modules are enabled but DATABASE_URL is unset: production refuses to start "
                       "(APP__MODULES__ENABLED=\"\" if it needs none)")


# --- compose -----------------------------------------------------------------

def compose_env(service):
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: ("" if v is None else str(v)) for k, v in env.items()}


def compose_networks(service):
    nets = service.get("networks")
    if nets is None:
        return {"default": {}}
    if isinstance(nets, list):
        return {n: {} for n in nets}
    return {n: (v or {}) for n, v in nets.items()}


def check_compose(path):
    doc = yaml.safe_load(open(path))
    services = doc.get("services") or {}
    volumes = doc.get("volumes") or {}
    rabbit_env = compose_env(services.get("rabbitmq", {}))

    def runs_shop(svc):
        return svc.get("image") == "shop:local" or svc.get("build") is not None

    def command(svc):
        return svc.get("command") or ["serve"]

    # Host ports: every profile may run next to the default services.
    seen = {}
    for name, svc in services.items():
        for port in svc.get("ports") or []:
            parts = str(port).split(":")
            host = parts[-2] if len(parts) >= 2 else None
            if host is None:
                problem(f"compose {name}", f"port {port} is published on a random host port")
                continue
            if host in seen:
                problem(f"compose {name}", f"host port {host} is also published by {seen[host]}")
            seen[host] = name
            if name == "rabbitmq" and parts[-1] == "5672":
                problem("compose rabbitmq", "publishes AMQP (5672)")
            if name == "rabbitmq" and (len(parts) < 3 or parts[0] != "127.0.0.1"):
                problem("compose rabbitmq", f"{port} is not bound to 127.0.0.1")
    if rabbit_env.get("RABBITMQ_DEFAULT_USER", "guest") == "guest":
        problem("compose rabbitmq", "runs with the guest account: set RABBITMQ_DEFAULT_USER/PASS")

    keys = services.get("keys")
    if not keys or command(keys)[:2] != ["keys", "generate"]:
        problem("compose", "no one-shot `keys` service running `shop keys generate`")
    for name, svc in services.items():
        for vol in svc.get("volumes") or []:
            src = str(vol).split(":")[0]
            if not src.startswith((".", "/")) and src not in volumes:
                problem(f"compose {name}", f"mounts undeclared volume {src}")

    for profile in [None, "extracted", "split"]:
        label = f"compose ({'default' if profile is None else 'profile ' + profile})"
        active = {n: s for n, s in services.items()
                  if not s.get("profiles") or profile in s.get("profiles")}
        # name -> (service, networks it answers on); aliases only on their network
        names = {}
        for n, s in active.items():
            for net, conf in compose_networks(s).items():
                for alias in [n] + list(conf.get("aliases") or []):
                    names.setdefault(alias, (n, set()))[1].add(net)
        for name, svc in active.items():
            where = f"{label} {name}"
            for dep, cond in (svc.get("depends_on") or {}).items():
                if dep not in active:
                    problem(where, f"depends on {dep}, which this profile does not start")
            if not runs_shop(svc):
                continue
            env = compose_env(svc)
            if command(svc)[0] not in NO_SETTINGS:
                check_settings_load(where, env)
            if command(svc) != ["serve"]:
                continue
            mine = set(compose_networks(svc))

            def serves(url, where, mine=mine, active=active, names=names):
                u = urlsplit(url)
                target = names.get(u.hostname)
                if target is None or not (target[1] & mine):
                    problem(where, f"{url}: no service `{u.hostname}` on its networks")
                    return None
                if (u.port or 80) != 8080:
                    problem(where, f"{url}: the shop listens on 8080")
                return set(local_modules(compose_env(active[target[0]])))

            check_topology(where, env, serves)
            # The processes it forwards to must trust the address it calls
            # them from: a fixed one on the network the URL's name is on.
            for m in forwarded(env):
                url = env.get(f"APP__MODULES__{m.upper()}__URL")
                target = names.get(urlsplit(url or "").hostname)
                if not target or target[0] not in active:
                    continue
                nets = target[1] & mine
                fixed = [compose_networks(svc)[n].get("ipv4_address") for n in nets]
                if len(nets) != 1 or not fixed[0]:
                    problem(where, f"forwards {m} to {url} from no fixed address (reach it by a name on one "
                                   f"network only, where this service has an ipv4_address), so {target[0]} "
                                   "cannot trust it to name the client")
                elif not trusts(compose_env(active[target[0]]), fixed[0]):
                    problem(f"{label} {target[0]}", f"{where.split()[-1]} forwards {m} to it from {fixed[0]}, which "
                                                   "APP__RATE_LIMIT__TRUSTED_PROXIES does not name: its rate limits "
                                                   "would count the gateway as one client")
            mounts = [str(v) for v in svc.get("volumes") or []]
            if not any(m.split(":")[0] == "keys" and m.split(":")[1] == KEYS_DIR and m.endswith(":ro")
                       for m in mounts):
                problem(where, f"does not mount the keys volume read-only at {KEYS_DIR}")
            for key in ["APP__AUTH__SIGNING_KEY_FILE", "APP__AUTH__SERVICE_KEY_FILE"]:
                if env.get(key) and not env[key].startswith(KEYS_DIR + "/"):
                    problem(where, f"{key} is not in the keys volume ({KEYS_DIR})")
            if (svc.get("depends_on") or {}).get("keys", {}).get("condition") != "service_completed_successfully":
                problem(where, "does not wait for `keys` (service_completed_successfully)")
            amqp = env.get("APP__EVENTS__RABBITMQ__URL")
            if amqp:
                u = urlsplit(amqp)
                if (u.username, u.password) != (rabbit_env.get("RABBITMQ_DEFAULT_USER"),
                                                rabbit_env.get("RABBITMQ_DEFAULT_PASS")):
                    problem(where, "APP__EVENTS__RABBITMQ__URL does not carry the broker's user and password")
                if "rabbitmq" not in active:
                    problem(where, "uses RabbitMQ, which this profile does not start")


# --- kubernetes --------------------------------------------------------------

def labels_match(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def selector_matches(selector, labels):
    """A LabelSelector (matchLabels and matchExpressions); {} selects all."""
    selector = selector or {}
    if not all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def pod_of(template, ns, name):
    """What the NetworkPolicies see of a pod (a template, or just labels)."""
    spec = template.get("spec") or {}
    return {"name": name, "ns": ns or "default", "labels": (template.get("metadata") or {}).get("labels") or {},
            "ports": [p for c in spec.get("containers") or [] for p in c.get("ports") or []]}


def peer_matches(peer, pod, ns):
    """One `from`/`to` entry of a policy in namespace `ns` against a pod."""
    if "ipBlock" in peer:
        return True  # an address range may hold any pod's address
    if "namespaceSelector" in peer:
        if not selector_matches(peer["namespaceSelector"], {"kubernetes.io/metadata.name": pod["ns"]}):
            return False
    elif pod["ns"] != ns:
        return False
    return selector_matches(peer.get("podSelector"), pod["labels"])


def port_matches(ports, dst, port):
    """A rule's `ports` against TCP `port` on pod `dst` (a name is looked
    up in dst's container ports); none listed: every port."""
    for p in ports or [{}]:
        want = p.get("port")
        if p.get("protocol", "TCP") != "TCP":
            continue
        if want is None or (isinstance(want, int) and want <= port <= p.get("endPort", want)):
            return True
        if isinstance(want, str) and any(c.get("name") == want and c["containerPort"] == port
                                         and c.get("protocol", "TCP") == "TCP" for c in dst["ports"]):
            return True
    return False


def np_allows(policies, src, dst, port):
    """Whether the NetworkPolicies let pod `src` connect to TCP `port` on
    pod `dst`: both dst's ingress and src's egress must allow it. A pod no
    policy selects (for that direction) takes everything; policies add up."""
    for pod, peer, kind, key in ((dst, src, "Ingress", "from"), (src, dst, "Egress", "to")):
        mine = [np for np in policies
                if (np["metadata"].get("namespace") or "default") == pod["ns"]
                and kind in (np["spec"].get("policyTypes") or ["Ingress"] + ["Egress"] * ("egress" in np["spec"]))
                and selector_matches(np["spec"].get("podSelector"), pod["labels"])]
        if mine and not any((not rule.get(key) or any(peer_matches(e, peer, pod["ns"]) for e in rule[key]))
                            and port_matches(rule.get("ports"), dst, port)
                            for np in mine for rule in np["spec"].get(kind.lower()) or []):
            return False
    return True


def check_k8s(name, path):
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    where0 = f"k8s {name}"
    if not docs:
        problem(where0, "renders nothing")
        return
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    configmaps = {d["metadata"]["name"]: d.get("data") or {} for d in by_kind.get("ConfigMap", [])}
    services = by_kind.get("Service", [])
    deployments = by_kind.get("Deployment", [])
    if not deployments:
        problem(where0, "renders no Deployment")
    for d in docs:
        if d["kind"] in ("Deployment", "Service", "Job", "PodDisruptionBudget", "HorizontalPodAutoscaler"):
            labels = d["metadata"].get("labels") or {}
            for k in ("name", "component", "part-of"):
                if f"app.kubernetes.io/{k}" not in labels:
                    problem(f"{where0} {d['kind']}/{d['metadata']['name']}", f"lacks label app.kubernetes.io/{k}")

    def pod_env(pod, container, where):
        env = {}
        for src in container.get("envFrom") or []:
            ref = (src.get("configMapRef") or {}).get("name")
            if ref is not None:
                if ref not in configmaps:
                    problem(where, f"envFrom ConfigMap {ref} is not rendered")
                env.update(configmaps.get(ref, {}))
            elif src.get("secretRef"):
                problem(where, "envFrom a whole Secret: name the keys")
        for e in container.get("env") or []:
            env[e["name"]] = SECRET if "valueFrom" in e else str(e.get("value", ""))
        return env

    def check_pod(kind_name, pod, need_probes):
        where = f"{where0} {kind_name}"
        psc = pod.get("securityContext") or {}
        for c in pod.get("containers", []):
            w = f"{where} container {c['name']}"
            sc = c.get("securityContext") or {}
            merged = {**psc, **sc}
            if merged.get("runAsNonRoot") is not True:
                problem(w, "runAsNonRoot is not true")
            if merged.get("runAsUser") != 10001:
                problem(w, "runAsUser is not 10001")
            if sc.get("readOnlyRootFilesystem") is not True:
                problem(w, "readOnlyRootFilesystem is not true")
            if sc.get("allowPrivilegeEscalation") is not False:
                problem(w, "allowPrivilegeEscalation is not false")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                problem(w, "capabilities do not drop ALL")
            if (merged.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
                problem(w, "seccompProfile is not RuntimeDefault")
            res = c.get("resources") or {}
            for part in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in (res.get(part) or {}):
                        problem(w, f"no {part}.{r}")
            if need_probes:
                for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                    if probe not in c:
                        problem(w, f"no {probe}")

    for job in by_kind.get("Job", []):
        check_pod(f"Job/{job['metadata']['name']}", job["spec"]["template"]["spec"], False)
    migrate = [j for j in by_kind.get("Job", [])
               if j["spec"]["template"]["spec"]["containers"][0].get("args") == ["migrate"]]
    if len(migrate) != 1:
        problem(where0, "needs exactly one Job running `shop migrate`")
    else:
        job_env = pod_env(None, migrate[0]["spec"]["template"]["spec"]["containers"][0], where0)
        if "DATABASE_URL" not in job_env:
            problem(where0, "the migration Job has no DATABASE_URL")
        # A module given a database of its own must be migrated there: the
        # Job needs every such URL a shop process has.
        for dep in deployments:
            dep_env = pod_env(dep["spec"]["template"]["spec"],
                              dep["spec"]["template"]["spec"]["containers"][0], where0)
            for key in sorted(k for k in dep_env if re.fullmatch(r"APP__[A-Z]+__DATABASE__URL", k)):
                if key not in job_env:
                    problem(where0, f"Deployment/{dep['metadata']['name']} sets {key}, "
                                    "the migration Job does not: that module would be migrated "
                                    "into the shared database")

    served = {}  # deployment name -> local modules
    shop = []
    for dep in deployments:
        dname = dep["metadata"]["name"]
        pod = dep["spec"]["template"]["spec"]
        check_pod(f"Deployment/{dname}", pod, True)
        c = pod["containers"][0]
        args = c.get("args") or ["serve"]
        if "sandbox-provider" in args:
            annotations = dep["metadata"].get("annotations") or {}
            if not any("SANDBOX" in v for v in annotations.values()):
                problem(f"{where0} Deployment/{dname}", "runs the sandbox provider without saying SANDBOX")
        if args != ["serve"]:
            continue
        shop.append(dep)
        env = pod_env(pod, c, f"{where0} Deployment/{dname}")
        served[dname] = (dep, env, set(local_modules(env)))

    def serves_k8s(url, where):
        u = urlsplit(url)
        svc = next((s for s in services if s["metadata"]["name"] == u.hostname), None)
        if svc is None:
            problem(where, f"{url}: no Service {u.hostname}")
            return None
        if not any(p.get("port") == u.port for p in svc["spec"].get("ports", [])):
            problem(where, f"{url}: Service {u.hostname} has no port {u.port}")
        sel = svc["spec"].get("selector") or {}
        for dname, (dep, _, local) in served.items():
            if labels_match(sel, dep["spec"]["template"]["metadata"].get("labels") or {}):
                return local
        problem(where, f"{url}: Service {u.hostname} selects no shop Deployment")
        return None

    for dname, (dep, env, local) in served.items():
        where = f"{where0} Deployment/{dname}"
        spec = dep["spec"]
        pod = spec["template"]["spec"]
        labels = spec["template"]["metadata"].get("labels") or {}
        c = pod["containers"][0]
        check_topology(where, env, serves_k8s)
        # A module process answers for itself (?scope=process): the full
        # check asks every process it calls, at every probe. An entry
        # process (the monolith, a gateway) keeps the full check.
        ready = "/health/ready" if is_entry(env) else "/health/ready?scope=process"
        for probe, path in (("startupProbe", "/health/live"), ("livenessProbe", "/health/live"),
                            ("readinessProbe", ready)):
            got = ((c.get(probe) or {}).get("httpGet") or {}).get("path")
            if got != path:
                problem(where, f"{probe} is not GET {path} (got {got})")
        # What Prometheus (deploy/observability/prometheus-k8s.yml) and the
        # alerts rely on.
        annotations = spec["template"]["metadata"].get("annotations") or {}
        port = next((p["containerPort"] for p in c.get("ports") or [] if p.get("name") == "http"), None)
        if annotations.get("prometheus.io/scrape") != "true" or annotations.get("prometheus.io/path") != "/metrics" \
                or annotations.get("prometheus.io/port") != str(port):
            problem(where, f"pods lack prometheus.io/scrape \"true\", path /metrics, port {port}")
        otel = env.get("OTEL_SERVICE_NAME")
        if not isinstance(otel, str) or not otel:
            problem(where, "no OTEL_SERVICE_NAME: its traces would all be `shop`")
        elif labels.get("service") != otel:
            problem(where, f"pod label service={labels.get('service')} is not its OTEL_SERVICE_NAME {otel}")
        if not any(selector_matches(np["spec"].get("podSelector"), labels)
                   and "Ingress" in (np["spec"].get("policyTypes") or ["Ingress"])
                   for np in by_kind.get("NetworkPolicy", [])):
            problem(where, "no NetworkPolicy selects its pods")
        strategy = spec.get("strategy") or {}
        ru = strategy.get("rollingUpdate") or {}
        if strategy.get("type") != "RollingUpdate" or ru.get("maxUnavailable") != 0 or ru.get("maxSurge") != 1:
            problem(where, "strategy is not RollingUpdate with maxUnavailable 0, maxSurge 1")
        pre = (((c.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}).get("command") or []
        sleep = int(pre[1]) if len(pre) == 2 and pre[0] == "sleep" else None
        if sleep is None:
            problem(where, "no preStop [sleep, N]")
        elif pod.get("terminationGracePeriodSeconds", 30) <= sleep + SHUTDOWN_SECS + TASK_STOP_SECS:
            problem(where, f"terminationGracePeriodSeconds is not above {sleep} s (preStop) + {SHUTDOWN_SECS} s "
                           f"(shutdown) + {TASK_STOP_SECS} s (a background task's stop)")
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts") or []}
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        # Production's transport is smtp (config/production.toml).
        if "notification" in local:
            transport = env.get("APP__NOTIFICATION__EMAIL__TRANSPORT", "smtp")
            if transport == "file":
                problem(where, "emails go to files, which nothing cleans: the pod's storage fills "
                               "(set APP__NOTIFICATION__EMAIL__TRANSPORT=smtp)")
            elif transport == "smtp":
                if not env.get("APP__NOTIFICATION__EMAIL__SMTP_HOST"):
                    problem(where, "sends email over SMTP but APP__NOTIFICATION__EMAIL__SMTP_HOST is unset")
                if env.get("APP__NOTIFICATION__EMAIL__SMTP_TLS") == "none":
                    problem(where, "APP__NOTIFICATION__EMAIL__SMTP_TLS=none: production refuses it")
                if env.get("APP__NOTIFICATION__EMAIL__SMTP_USERNAME") and \
                        env.get("APP__NOTIFICATION__EMAIL__SMTP_PASSWORD") is not SECRET:
                    problem(where, "APP__NOTIFICATION__EMAIL__SMTP_PASSWORD does not come from a Secret")
        if isinstance(env.get("APP__NOTIFICATION__EMAIL__SMTP_PASSWORD"), str):
            problem(where, "APP__NOTIFICATION__EMAIL__SMTP_PASSWORD is in plain text: take it from a Secret")
        # Behind a gateway: it must trust some proxies (the gateway's pods),
        # or its rate limits count each gateway pod as one client.
        if not is_entry(env) and any(m in local for d, (_, e, _) in served.items() for m in forwarded(e)) \
                and not trusts(env, None):
            problem(where, "a gateway forwards to it but APP__RATE_LIMIT__TRUSTED_PROXIES is unset: "
                           "its rate limits count each gateway pod as one client")
        for key, needed in (("APP__AUTH__SERVICE_KEY_FILE", bool(enabled_modules(env))),
                            ("APP__AUTH__SIGNING_KEY_FILE", "user" in local)):
            fpath = env.get(key)
            if not needed or not isinstance(fpath, str):
                continue
            directory, fname = fpath.rsplit("/", 1)
            m = mounts.get(directory)
            secret = (volumes.get(m["name"], {}) if m else {}).get("secret")
            if not secret:
                problem(where, f"{key}={fpath} is not in a mounted Secret")
                continue
            items = secret.get("items")
            if items is not None and fname not in [i["path"] for i in items]:
                problem(where, f"{key}={fpath}: Secret {secret['secretName']} is mounted without {fname}")
        if not any(labels_match((p["spec"].get("selector") or {}).get("matchLabels"), labels)
                   for p in by_kind.get("PodDisruptionBudget", [])):
            problem(where, "no PodDisruptionBudget selects its pods")
        hpas = [h for h in by_kind.get("HorizontalPodAutoscaler", [])
                if h["spec"]["scaleTargetRef"]["name"] == dname]
        if len(hpas) != 1:
            problem(where, "needs one HorizontalPodAutoscaler")
        else:
            h = hpas[0]
            if h["apiVersion"] != "autoscaling/v2" or h["spec"].get("minReplicas", 1) < 2:
                problem(where, "its HPA is not autoscaling/v2 with minReplicas >= 2")
            if not any((m.get("resource") or {}).get("name") == "cpu" for m in h["spec"].get("metrics", [])):
                problem(where, "its HPA does not scale on CPU")
        if not any(labels_match(s["spec"].get("selector"), labels) for s in services):
            problem(where, "no Service selects its pods")
    for m in MODULES:
        at = [d for d, (_, _, local) in served.items() if m in local]
        if len(at) != 1:
            problem(where0, f"module {m} is served by {len(at)} Deployments ({', '.join(at) or 'none'}), not one")
    for s in services:
        sel = s["spec"].get("selector") or {}
        if not any(labels_match(sel, d["spec"]["template"]["metadata"].get("labels") or {}) for d in deployments):
            problem(f"{where0} Service/{s['metadata']['name']}", "selects no Deployment's pods")

    # Who may call whom, by the NetworkPolicies: every call the topology
    # makes (forwarded requests, the user module's keys, order's saga calls,
    # the payment module's provider when it runs here) gets through on the
    # HTTP port; a pod that is not the shop's reaches no shop process.
    policies = by_kind.get("NetworkPolicy", [])
    pods = {d: pod_of(dep["spec"]["template"], dep["metadata"].get("namespace"), f"Deployment/{d}")
            for d, (dep, _, _) in served.items()}
    serving = {m: d for d, (_, _, local) in served.items() for m in local}

    def http_port(dst):
        port = next((p["containerPort"] for p in dst["ports"] if p.get("name") == "http"), None)
        if port is None:
            problem(f"{where0} {dst['name']}", "no container port named http")
        return port

    for dname, (dep, env, local) in served.items():
        src = pods[dname]
        targets = [(f"the {m} module", pods[serving[m]]) for m in sorted(reached(env)) if m in serving]
        provider = urlsplit(env.get("APP__PAYMENT__PROVIDER_URL") or "").hostname or ""
        svc = next((s for s in services if s["metadata"]["name"] == provider.split(".")[0]), None)
        if "payment" in local and svc:
            targets += [(f"the payment provider ({provider})",
                         pod_of(d["spec"]["template"], d["metadata"].get("namespace"), f"Deployment/{d['metadata']['name']}"))
                        for d in deployments if labels_match(svc["spec"].get("selector"),
                                                             d["spec"]["template"]["metadata"].get("labels") or {})]
        for what, dst in targets:
            port = http_port(dst)
            if port and not np_allows(policies, src, dst, port):
                problem(f"{where0} {src['name']}", f"calls {what} at {dst['name']}, but the NetworkPolicies "
                                                   f"block it on port http ({port})")
    for dname, dst in pods.items():
        other = pod_of({"metadata": {"labels": {"app": "other"}}}, dst["ns"], "other")
        port = http_port(dst)
        if port and np_allows(policies, other, dst, port):
            problem(f"{where0} {dst['name']}", f"a pod that is not the shop's (labels {{app: other}}, same namespace) "
                                               f"may reach port http ({port}): no NetworkPolicy keeps it out")


def main(argv):
    if len(argv) == 3 and argv[1] == "compose":
        check_compose(argv[2])
        what = argv[2]
    elif len(argv) == 4 and argv[1] == "k8s":
        check_k8s(argv[2], argv[3])
        what = f"k8s overlay {argv[2]}"
    else:
        sys.exit(__doc__)
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        return 1
    print(f"{what}: every process has what it needs")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
