"""A classic-BPF interpreter for seccomp filters: runs libseccomp's compiled program on
synthetic `struct seccomp_data`, so a test can check what the kernel would answer."""

from __future__ import annotations

import struct
from dataclasses import dataclass

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
AUDIT_ARCH_AARCH64 = 0xC00000B7

RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000


@dataclass(frozen=True)
class Insn:
    code: int
    jt: int
    jf: int
    k: int


def parse(program: bytes) -> list[Insn]:
    return [Insn(*struct.unpack_from("<HBBI", program, i)) for i in range(0, len(program), 8)]


def seccomp_data(nr: int, arch: int, args: tuple[int, ...] = ()) -> bytes:
    full = tuple(args) + (0,) * (6 - len(args))
    return struct.pack("<iIQ6Q", nr, arch, 0, *[a & 0xFFFFFFFFFFFFFFFF for a in full])


def run(prog: list[Insn], data: bytes) -> int:
    """The filter's 32-bit return value for `data`."""
    a = x = 0
    mem = [0] * 16
    pc = 0
    for _ in range(100000):
        ins = prog[pc]
        cls, code = ins.code & 0x07, ins.code
        pc += 1
        if cls == 0x00:  # LD
            mode = code & 0xE0
            if mode == 0x20:  # ABS, word
                a = struct.unpack_from("<I", data, ins.k)[0]
            elif mode == 0x00:  # IMM
                a = ins.k
            elif mode == 0x60:  # MEM
                a = mem[ins.k]
            else:
                raise ValueError(f"unsupported LD {code:#x}")
        elif cls == 0x01:  # LDX
            x = mem[ins.k] if code & 0xE0 == 0x60 else ins.k
        elif cls == 0x02:  # ST
            mem[ins.k] = a
        elif cls == 0x03:  # STX
            mem[ins.k] = x
        elif cls == 0x04:  # ALU
            src = x if code & 0x08 else ins.k
            op = code & 0xF0
            a = {0x00: a + src, 0x10: a - src, 0x20: a * src, 0x40: a | src, 0x50: a & src,
                 0x60: a << src, 0x70: a >> src, 0xA0: a ^ src}[op] & 0xFFFFFFFF
        elif cls == 0x05:  # JMP
            op = code & 0xF0
            src = x if code & 0x08 else ins.k
            if op == 0x00:
                pc += ins.k
                continue
            cond = {0x10: a == src, 0x20: a > src, 0x30: a >= src, 0x40: bool(a & src)}[op]
            pc += ins.jt if cond else ins.jf
        elif cls == 0x06:  # RET
            return a if code & 0x18 == 0x10 else ins.k
        elif cls == 0x07:  # MISC
            if code & 0xF8 == 0x00:
                x = a
            else:
                a = x
    raise RuntimeError("the filter did not return")
