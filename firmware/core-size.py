#!/usr/bin/env python3
"""Flash bytes of the core in a footprint ELF, by symbol attribution.

"Core code" is every function reachable through calls and branches from the two out-of-line
wrappers `footprint::load` and `footprint::push` (which hold nothing but the inlined core), plus
the read-only data those functions address through literal pools or movw/movt pairs (CRC table, constants,
panic location strings). The measuring harness (`main`, `put`, `spin`, `paint`, semihosting,
cortex-m-rt's reset and vector table) is reachable only from `main` and is not counted; shared
helpers that the core calls (memcpy, memset, fmaxf) are counted as core.

    core-size.py ELF [--list]     # prints `core_code_bytes N`, with --list every symbol

Also printed: how much of it is the compiler's memcpy/memmove/memset (`compiler_builtins`),
which any firmware that copies a slice links anyway.
"""
import re
import subprocess
import sys

elf = sys.argv[1]
listing = "--list" in sys.argv

syms = []  # (addr, size, kind, name)
for line in subprocess.run(["arm-none-eabi-nm", "-S", "-C", elf], capture_output=True,
                           text=True, check=True).stdout.splitlines():
    p = line.split(None, 3)
    if len(p) == 4 and p[2].lower() in "trd":
        syms.append((int(p[0], 16) & ~1, int(p[1], 16), p[2].lower(), p[3]))
funcs = {a: (s, n) for a, s, k, n in syms if k == "t"}
data = sorted((a, s, n) for a, s, k, n in syms if k in "rd")


def owner(addr, table):
    for a, s, n in table:
        if a <= addr < a + s:
            return (a, s, n)
    return None


ftable = sorted((a, s, n) for a, (s, n) in funcs.items())
dis = subprocess.run(["arm-none-eabi-objdump", "-d", "--no-show-raw-insn", elf],
                     capture_output=True, text=True, check=True).stdout
# Per function: branch targets and literal-pool words.
calls, words = {}, {}
cur = None
for line in dis.splitlines():
    m = re.match(r"^([0-9a-f]+) <.*>:$", line)
    if m:
        cur = int(m.group(1), 16)
        low = {}
        calls.setdefault(cur, set())
        words.setdefault(cur, set())
        continue
    if cur is None:
        continue
    m = re.match(r"^\s+([0-9a-f]+):\s+(\S+)\s+(.*)$", line)
    if not m:
        continue
    op, args = m.group(2), m.group(3)
    t = re.match(r"([0-9a-f]+) <", args)
    if op.startswith("b") and t:
        calls[cur].add(int(t.group(1), 16))
    if op == ".word":
        w = re.match(r"0x([0-9a-f]+)", args)
        if w:
            words[cur].add(int(w.group(1), 16))
    # Addresses built in a register: `movw rX, #lo` then `movt rX, #hi`.
    mw = re.match(r"(\w+), #(\d+)", args)
    if op == "movw" and mw:
        low[mw.group(1)] = int(mw.group(2))
    elif op == "movt" and mw and mw.group(1) in low:
        words[cur].add(int(mw.group(2)) << 16 | low.pop(mw.group(1)))

roots = [a for a, (s, n) in funcs.items() if n in ("footprint::load", "footprint::push")]
if len(roots) != 2:
    sys.exit("error: footprint::load / footprint::push not found")
# The harness's own code (its panic handler, semihosting output, `main`) is not followed even
# where a core panic path or a shared outlined fragment leads into it.
HARNESS = ("footprint::", "__rustc::rust_begin_unwind", "cortex_m_semihosting::", "main")
seen, todo = set(), list(roots)
while todo:
    f = todo.pop()
    if f in seen:
        continue
    if f not in roots and funcs[f][1].startswith(HARNESS):
        continue
    seen.add(f)
    for t in calls.get(f, ()):
        o = owner(t, ftable)
        if o and o[0] not in seen:
            todo.append(o[0])
rodata = {}
for f in seen:
    for w in words.get(f, ()):
        o = owner(w & ~0, data)
        if o:
            rodata[o[0]] = o
total = 0
rows = []
for f in seen:
    s, n = funcs[f]
    total += s
    rows.append((s, "text", n))
for a, s, n in rodata.values():
    # The embedded model (the decoded `model::MODEL`, or the file) or stream, not code.
    if s > 16384 or "model::MODEL" in n:
        continue
    total += s
    rows.append((s, "rodata", n))
if listing:
    for s, k, n in sorted(rows, reverse=True):
        print(f"{s:7d} {k:6s} {n[:110]}")
RUNTIME = ("compiler_builtins::", "__aeabi_", "memcpy", "memmove", "memset", "memclr")
runtime = sum(s for s, k, n in rows if k == "text" and n.startswith(RUNTIME))
print(f"core_code_bytes {total}")
print(f"core_code_bytes_of_which_mem_runtime {runtime}")
