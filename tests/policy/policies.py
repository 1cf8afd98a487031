"""Policies shared by the policy tests: the T0 testdata of policy.md §7, the annotated example
of §1.9 and the restrictive default of §1.7, written out as YAML."""

from __future__ import annotations

from stockade.policy import Policy, compile_policy, load_policy_text
from stockade.policy.engine import Engine

T0 = """\
version: 1
filesystem_policy:
  include_workdir: true
  read_only: [/usr, /lib, /proc, /dev/urandom, /app, /etc, /var/log]
  read_write: [/sandbox, /tmp, /dev/null]
landlock:
  compatibility: best_effort
process:
  run_as_user: sandbox
  run_as_group: sandbox
network_policies:
  claude_code:
    name: claude_code
    endpoints:
      - { host: api.anthropic.com, port: 443 }
      - { host: statsig.anthropic.com, port: 443 }
    binaries:
      - { path: /usr/local/bin/claude }
      - { path: /usr/bin/node }
  github_ssh_over_https:
    name: github-ssh-over-https
    endpoints:
      - host: github.com
        port: 443
        protocol: rest
        enforcement: enforce
        rules:
          - allow:
              method: GET
              path: "/**/info/refs*"
          - allow:
              method: POST
              path: "/**/git-upload-pack"
    binaries:
      - { path: /usr/bin/git }
  copilot:
    name: copilot
    endpoints:
      - { host: github.com, port: 443 }
      - { host: api.github.com, port: 443 }
      - { host: api.githubcopilot.com, port: 443 }
      - { host: copilot-proxy.githubusercontent.com, port: 443 }
    binaries:
      - { path: "/usr/lib/node_modules/@github/copilot/**" }
      - { path: "/home/*/.local/bin/copilot" }
      - { path: /usr/bin/node }
  gitlab:
    name: gitlab
    endpoints:
      - { host: gitlab.com, port: 443 }
    binaries:
      - { path: /usr/bin/glab }
"""

ANNOTATED = """\
version: 1                          # required; value not checked
filesystem_policy:                  # STATIC
  include_workdir: true             # add the CWD to read_write at Landlock time
  read_only:  [/usr, /lib, /etc, /proc, /dev/urandom]   # absolute, no '..', <=4096 chars
  read_write: [/sandbox, /tmp]      # '/' alone is rejected as overly broad
landlock:
  compatibility: best_effort        # or hard_requirement; anything else == best_effort
process:                            # STATIC; must be sandbox/sandbox at 1cabd25
  run_as_user: sandbox
  run_as_group: sandbox
network_policies:                   # DYNAMIC (hot-reloadable)
  pkg_registries:                   # map key = identity used in logs/403s/matching
    name: package-registries        # display only
    endpoints:
      - { host: pypi.org, port: 443 }                   # L4 only (TLS still auto-terminated, see 3.7)
      - { host: "*.pythonhosted.org", ports: [443] }    # '*' = exactly one DNS label
    binaries:
      - { path: /usr/bin/pip }
      - { path: "/sandbox/.venv/**/python*" }           # glob over exe path AND ancestors
  github_api:
    endpoints:
      - host: api.github.com
        port: 443
        protocol: rest              # L7 inspection
        enforcement: enforce        # omit => audit (log-only!)
        rules:                      # mutually exclusive with `access`
          - allow: { method: GET, path: "/repos/**" }
          - allow:
              method: GET
              path: /search/code
              query:
                q: "repo:*"                   # every value of q must match
                per_page: { any: ["10", "2?"] }
    binaries:
      - { path: /usr/bin/gh }
  internal_db:
    endpoints:
      - host: db.corp.internal
        port: 5432
        allowed_ips: ["10.20.0.0/16"]   # SSRF override: resolved IPs must be inside
    binaries:
      - { path: /usr/bin/psql }
  any_host_in_lab_net:
    endpoints:
      - { ports: [8080, 8443], allowed_ips: ["192.168.50.0/24"] }   # hostless: any name, IP-checked
    binaries:
      - { path: /usr/bin/curl }
"""

RESTRICTIVE_DEFAULT = """\
version: 1
filesystem_policy: {include_workdir: true,
  read_only: [/usr, /lib, /proc, /dev/urandom, /app, /etc, /var/log],
  read_write: [/sandbox, /tmp, /dev/null]}
landlock: {compatibility: best_effort}
process: {run_as_user: sandbox, run_as_group: sandbox}
network_policies: {}          # => all egress denied ("network connections not allowed by policy")
"""

# The prover's testdata policy (policy.md §7 case 91): read-only L7 API plus an L4 endpoint.
PROVER = """\
version: 1
network_policies:
  github_api:
    name: github-api
    endpoints:
      - host: api.github.com
        port: 443
        protocol: rest
        enforcement: enforce
        access: read-only
      - host: github.com
        port: 443
    binaries:
      - { path: /usr/bin/gh }
"""

CURL = "/usr/bin/curl"


def load(text: str) -> Policy:
    return load_policy_text(text, "test.yaml")


def engine(text: str) -> Engine:
    return compile_policy(load(text))


def network(rules_yaml: str) -> str:
    """A whole policy around an indented `network_policies` body."""
    return "version: 1\nnetwork_policies:\n" + rules_yaml
