"""Probe programs run *inside* sandboxes with /usr/bin/python3 (text written to a file).

SYSCALL_PROBE runs each raw syscall in a forked child (so a call that unexpectedly succeeds,
e.g. unshare or execveat, cannot disturb the others) and prints {label: errno} as JSON, 0 for
success. The probe list is computed on the host (syscall numbers from libseccomp).
"""

from __future__ import annotations

SYSCALL_PROBE = r'''
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def call(nr, args):
    if nr == "execveat":  # fd-only exec of /bin/true: (fd, "", argv, envp, AT_EMPTY_PATH)
        fd = os.open("/usr/bin/true", os.O_PATH)
        argv = (ctypes.c_char_p * 2)(b"true", None)
        envp = (ctypes.c_char_p * 1)(None)
        return libc.syscall(ctypes.c_long(322 if os.uname().machine == "x86_64" else 281), fd,
                            ctypes.c_char_p(b""), argv, envp, 0x1000)
    if nr == "tiocsti":
        return libc.syscall(ctypes.c_long(args[0]), 0, ctypes.c_long(args[1]), ctypes.c_char_p(b"x"))
    return libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])

out = {}
for label, nr, args in json.loads(sys.argv[1]):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        ret = call(nr, args)
        os.write(w, str(ctypes.get_errno() if ret == -1 else 0).encode())
        os._exit(0)
    os.close(w)
    data = os.read(r, 64)
    os.close(r)
    os.waitpid(pid, 0)
    out[label] = int(data) if data else 0  # nothing written: the process was replaced (exec)
print(json.dumps(out))
'''

UNIX_CONNECT = r'''
import errno, json, socket, sys
out = {}
for path in json.loads(sys.argv[1]):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path if not path.startswith("@") else "\0" + path[1:])
        out[path] = "connected"
    except OSError as e:
        out[path] = errno.errorcode.get(e.errno, str(e.errno))
    finally:
        s.close()
print(json.dumps(out))
'''

WRITE_PROBE = r'''
import errno, json, sys
out = {}
for path in json.loads(sys.argv[1]):
    try:
        with open(path, "w") as f:
            f.write("x")
        out[path] = "written"
    except OSError as e:
        out[path] = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(out))
'''

SUID_C = r'''
#include <stdio.h>
#include <unistd.h>
int main(void) { printf("%d %d\n", (int)getuid(), (int)geteuid()); return 0; }
'''

INT80_C = r'''
#include <stdio.h>
int main(void) {
    long ret;
    __asm__ volatile ("int $0x80" : "=a"(ret) : "a"(20L) : "memory");  /* i386 getpid */
    printf("%ld\n", ret);
    return 0;
}
'''
