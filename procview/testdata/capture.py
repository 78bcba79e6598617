#!/usr/bin/env python3
"""Capture the /proc fixtures used by procview's unit tests (run as root on a kernel with time namespaces).

For each boottime offset, a child is forked into a fresh time namespace (unshare(CLONE_NEWTIME), write
/proc/self/timens_offsets, fork) and reads the same files the host reads. The target process sleeps, so
its /proc/PID/stat is stable and only field 22 (starttime) differs between host and namespace.
Usage: capture.py OUTDIR
"""
import ctypes, os, sys, threading, time

libc = ctypes.CDLL(None, use_errno=True)
PR_SET_NAME = 15
CLONE_NEWTIME = 0x80
out = sys.argv[1]

# Target: a sleeping process whose comm contains ')' and spaces, with a second thread named likewise.
r, w = os.pipe()
tr, tw = os.pipe()
tgt = os.fork()
if tgt == 0:
    os.close(w)
    libc.prctl(PR_SET_NAME, b"(a) b)", 0, 0, 0)
    def thread():
        libc.prctl(PR_SET_NAME, b"t (x)) y", 0, 0, 0)
        os.write(tw, b"%d\n" % threading.get_native_id())
        os.read(r, 1)
    t = threading.Thread(target=thread)
    t.start()
    t.join()
    os._exit(0)
tid = int(os.read(tr, 64))
# Wait so that a negative offset larger than the target's start time (below) is still allowed (E9).
time.sleep(2.5)

targets = {
    "comm": f"/proc/{tgt}/stat",
    "task": f"/proc/{tgt}/task/{tid}/stat",
}


def read(path):
    with open(path, "rb") as f:
        return f.read()


def in_ns(off_b, paths):
    rr, ww = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rr)
        if libc.unshare(CLONE_NEWTIME) != 0:
            os._exit(3)
        with open("/proc/self/timens_offsets", "wb", buffering=0) as f:
            f.write(b"boottime %d %d\n" % off_b)
        c = os.fork()
        if c == 0:
            os.write(ww, b"\x00\x01".join(read(p) for p in paths))
            os._exit(0)
        os.waitpid(c, 0)
        os._exit(0)
    os.close(ww)
    data = b""
    while True:
        d = os.read(rr, 65536)
        if not d:
            break
        data += d
    os.waitpid(pid, 0)
    return data.split(b"\x00\x01")


def save(name, data):
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)


def off_name(off):
    return ("m" if off[0] < 0 else "") + f"{abs(off[0])}_{off[1]}"


names = list(targets)
paths = [targets[n] for n in names] + ["/proc/uptime", "/proc/stat"]
for n in names:
    save(f"{n}.host.stat", read(targets[n]))
save("uptime.host", read("/proc/uptime"))
save("stat.host", read("/proc/stat"))
rt = time.clock_gettime_ns(time.CLOCK_REALTIME)
bt = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
print("host boot time (realtime - boottime):", (rt - bt) // 10**9, (rt - bt) % 10**9)
# -k: the target's start_boottime + offset is negative, so the kernel's u64 starttime wraps.
k = time.clock_gettime_ns(time.CLOCK_BOOTTIME) // 10**9
offsets = [(864000, 0), (0, 5000001), (0, 9999999), (1, 999999999), (-300, 0), (-300, 123456789)]
for off in offsets + [(-k, 0), (-k, 123456789)]:
    res = in_ns(off, paths)
    for n, data in zip(names, res):
        save(f"{n}.b{off_name(off)}.stat", data)
    save(f"uptime.b{off_name(off)}", res[len(names)])
    btime = [l for l in res[len(names) + 1].split(b"\n") if l.startswith(b"btime ")]
    print(f"btime with boottime offset {off}: {btime[0].decode()}")
for n in names:
    assert read(targets[n]) == read(os.path.join(out, f"{n}.host.stat")), "target changed during capture"
os.write(w, b"x")
os.waitpid(tgt, 0)
