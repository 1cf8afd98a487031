"""More probe programs run *inside* sandboxes with /usr/bin/python3 (see test_escape_more.py).

Each prints one JSON object {attempt: outcome}; an outcome is "ok" (the attack worked) or the
errno name the kernel answered with. Every attempt is bounded (no loops without a count).
"""

from __future__ import annotations

PRELUDE = r'''
import ctypes, errno, json, os, signal, socket, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
out = {}
def name(e):
    return errno.errorcode.get(e, str(e))
def attempt(label, fn):
    try:
        fn()
        out[label] = "ok"
    except OSError as e:
        out[label] = name(e.errno)
    except ValueError as e:  # resource.setrlimit's word for EPERM
        out[label] = "ValueError"
def raw(label, ret):
    out[label] = name(ctypes.get_errno()) if ret == -1 else "ok"
'''

# argv[1]: {"ro_file": ..., "nested_ro_file": ..., "nested_ro_dir": ..., "work": ...}
LINKS = PRELUDE + r'''
a = json.loads(sys.argv[1])
w = a["work"]
def write(path):
    with open(path, "r+b") as f:
        f.write(b"pwned")
for tag, target in (("ro", a["ro_file"]), ("nested", a["nested_ro_file"])):
    attempt(f"{tag}:write", lambda: write(target))
    attempt(f"{tag}:link", lambda: os.link(target, f"{w}/hl-{tag}"))
    attempt(f"{tag}:rename-out", lambda: os.rename(target, f"{w}/mv-{tag}"))
    os.symlink(target, f"{w}/sl-{tag}")
    attempt(f"{tag}:write-via-symlink", lambda: write(f"{w}/sl-{tag}"))
    fd = os.open(target, os.O_RDONLY)
    attempt(f"{tag}:reopen-proc-fd-rw", lambda: write(f"/proc/self/fd/{fd}"))
    attempt(f"{tag}:reopen-proc-self-root", lambda: write("/proc/self/root" + target))
    os.close(fd)
attempt("nested:rename-dir", lambda: os.rename(a["nested_ro_dir"], f"{w}/moved-dir"))
attempt("nested:rmdir", lambda: os.rmdir(a["nested_ro_dir"]))
print(json.dumps(out))
'''

# Reopen inherited stdin/stdout (host files outside the policy) for writing through /proc.
STDIO_REOPEN = PRELUDE + r'''
def reopen(fd, flags):
    os.close(os.open(f"/proc/self/fd/{fd}", flags))
attempt("stdin:rdwr", lambda: reopen(0, os.O_RDWR))
attempt("stdin:trunc", lambda: reopen(0, os.O_WRONLY | os.O_TRUNC))
attempt("stdout:rdwr-trunc", lambda: reopen(1, os.O_RDWR | os.O_TRUNC))
attempt("stdin:chmod", lambda: os.chmod("/proc/self/fd/0", 0o777))
attempt("stdin:fchmod", lambda: os.fchmod(0, 0o777))
attempt("stdin:read", lambda: os.read(0, 4))  # the inherited descriptor itself is the user's grant
sys.stderr.write(json.dumps(out) + "\n")
'''

PROC_SYS_TARGETS = (
    "/proc/sys/kernel/hostname", "/proc/sys/kernel/core_pattern", "/proc/sys/vm/drop_caches",
    "/proc/sysrq-trigger", "/proc/self/attr/current", "/proc/self/attr/exec",
    "/proc/self/oom_score_adj", "/proc/self/uid_map", "/proc/self/setgroups", "/proc/self/mem",
    "/proc/1/oom_score_adj", "/proc/1/attr/current", "/sys/kernel/uevent_helper",
    "/sys/fs/cgroup/cgroup.procs",
)

PROC_SYS = PRELUDE + r'''
for path in json.loads(sys.argv[1]):
    def w(path=path):
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, b"1000\n")
        finally:
            os.close(fd)
    attempt(path, w)
attempt("listdir:/sys", lambda: os.listdir("/sys"))
print(json.dumps(out))
'''

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x4000000, 0x8000000, 0x20000000, 0x40000000
CLONE_NEWCGROUP = 0x2000000

NAMESPACE_TRICKS = PRELUDE + r'''
NR = {"x86_64": {"clone": 56, "unshare": 272, "setns": 308, "chroot": 161, "personality": 135},
      "aarch64": {"clone": 220, "unshare": 97, "setns": 268, "chroot": 51, "personality": 92}}[os.uname().machine]
flags = json.loads(sys.argv[1])
for label, flag in flags.items():
    raw(f"unshare:{label}", libc.syscall(ctypes.c_long(NR["unshare"]), ctypes.c_long(flag)))
    # A fork-like clone: a child, if one were created, exits at once.
    pid = libc.syscall(ctypes.c_long(NR["clone"]), ctypes.c_long(flag | signal.SIGCHLD), 0, 0, 0, 0)
    if pid == 0:
        os._exit(0)
    raw(f"clone:{label}", pid)
    if pid > 0:
        os.waitpid(pid, 0)
raw("chroot", libc.syscall(ctypes.c_long(NR["chroot"]), ctypes.c_char_p(b"/tmp")))
attempt("sethostname", lambda: socket.sethostname("pwned"))
for ns in ("user", "mnt", "pid", "net", "ipc", "uts", "cgroup"):
    attempt(f"open:/proc/1/ns/{ns}", lambda ns=ns: os.close(os.open(f"/proc/1/ns/{ns}", os.O_RDONLY)))
fd = os.open("/proc/self/ns/user", os.O_RDONLY)
raw("setns:own-user", libc.syscall(ctypes.c_long(NR["setns"]), fd, 0))
os.close(fd)
attempt("listdir:/proc/1/root", lambda: os.listdir("/proc/1/root/"))
attempt("listdir:/proc/1/cwd", lambda: os.listdir("/proc/1/cwd/"))
attempt("listdir:/proc/1/fd", lambda: os.listdir("/proc/1/fd"))
attempt("setuid0", lambda: os.setuid(0))
import resource
attempt("raise-core", lambda: resource.setrlimit(resource.RLIMIT_CORE, (1 << 20, 1 << 20)))
out["status:CapEff"] = [l.split()[1] for l in open("/proc/self/status") if l.startswith(("CapEff", "CapPrm", "CapBnd", "CapAmb", "CapInh"))]
out["status:NoNewPrivs"] = [l.split()[1] for l in open("/proc/self/status") if l.startswith("NoNewPrivs")][0]
print(json.dumps(out))
'''

# Ask the kernel to deliver SIGKILL (F_SETSIG) to init (our parent) when a pipe becomes readable.
SIGIO_TO_INIT = PRELUDE + r'''
import fcntl
target = os.getppid()  # init: PID 1 in the namespace mode, the supervisor's child otherwise
F_SETSIG = 10
r, w = os.pipe()
attempt("setown", lambda: fcntl.fcntl(r, fcntl.F_SETOWN, target))
attempt("setsig", lambda: fcntl.fcntl(r, F_SETSIG, signal.SIGKILL))
attempt("async", lambda: fcntl.fcntl(r, fcntl.F_SETFL, fcntl.fcntl(r, fcntl.F_GETFL) | os.O_ASYNC))
os.write(w, b"x")
time.sleep(0.3)
try:
    os.kill(target, 0)
    out["target-alive"] = True
except ProcessLookupError:
    out["target-alive"] = False
except PermissionError:
    out["target-alive"] = "EPERM"  # exists, but is outside our Landlock scope
print(json.dumps(out))
'''

# The supervisor seen from the landlock-only mode: same uid (rootless), host /proc.
SUPERVISOR_PROC = PRELUDE + r'''
init = os.getppid()
sup = int([l.split()[1] for l in open(f"/proc/{init}/status") if l.startswith("PPid:")][0])
out["sup"] = sup
for who, pid in (("sup", sup), ("init", init)):
    for entry in ("environ", "mem", "maps", "auxv", "syscall", "stack"):
        def rd(pid=pid, entry=entry):
            with open(f"/proc/{pid}/{entry}", "rb") as f:
                f.read(1)
        attempt(f"{who}:{entry}", rd)
    attempt(f"{who}:fd", lambda pid=pid: os.listdir(f"/proc/{pid}/fd"))
    attempt(f"{who}:fd0", lambda pid=pid: os.close(os.open(f"/proc/{pid}/fd/0", os.O_RDONLY)))
    attempt(f"{who}:fd0-link", lambda pid=pid: os.readlink(f"/proc/{pid}/fd/0"))
    attempt(f"{who}:cwd", lambda pid=pid: os.listdir(f"/proc/{pid}/cwd/"))
    attempt(f"{who}:root", lambda pid=pid: os.listdir(f"/proc/{pid}/root/"))
    attempt(f"{who}:ns-net", lambda pid=pid: os.close(os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)))
    attempt(f"{who}:kill0", lambda pid=pid: os.kill(pid, 0))
    attempt(f"{who}:sigterm", lambda pid=pid: os.kill(pid, signal.SIGTERM))
print(json.dumps(out))
'''

# Leave processes behind: forks (bounded by RLIMIT_NPROC and a count), each a new session
# running `sleep MARKER`; then exit at once without waiting.
LEAVE_BEHIND = PRELUDE + r'''
import resource
marker = sys.argv[1]
resource.setrlimit(resource.RLIMIT_NPROC, (64, 64))
made, refused = 0, None
for _ in range(80):
    try:
        pid = os.fork()
    except OSError as e:
        refused = name(e.errno)
        break
    if pid == 0:
        os.setsid()
        if os.fork() == 0:  # the double fork of a daemon: its parent exits, it is orphaned
            os.execv("/bin/sleep", ["sleep", marker])
        os._exit(0)
    made += 1
    os.waitpid(pid, 0)
print(json.dumps({"made": made, "refused": refused}))
'''

SECRETS_SCAN = PRELUDE + r'''
found = []
for k, v in os.environ.items():
    if "PRIVATE KEY" in v:
        found.append("env:" + k)
paths = []
for d in ("/run/stockade", os.path.dirname(os.environ.get("SSL_CERT_FILE", "/run/stockade/x"))):
    try:
        paths += [os.path.join(d, n) for n in os.listdir(d)]
    except OSError:
        pass
for k in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO"):
    if os.environ.get(k):
        paths.append(os.environ[k])
for p in sorted(set(paths)):
    try:
        with open(p, "rb") as f:
            if b"PRIVATE KEY" in f.read(1 << 20):
                found.append(p)
    except OSError:
        pass
print(json.dumps({"found": found, "scanned": sorted(set(paths))}))
'''
