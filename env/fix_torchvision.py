"Make `import torchvision` work where its compiled ops cannot load (a CUDA torchvision wheel beside a CPU-only torch)."
import re, subprocess, sys
from importlib.util import find_spec
from pathlib import Path

PROBE = "import torchvision"
MARK = "# ihd: registered only when the compiled ops loaded"

def import_error():
    "The error `import torchvision` raises in a fresh interpreter, or '' when it imports."
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True)
    return "" if r.returncode == 0 else (r.stderr.strip().splitlines() or ["unknown error"])[-1]

def patch(path):
    "Guard the unconditional `register_fake('torchvision::nms'/'qnms')` decorators behind `_has_ops()`."
    src = path.read_text()
    if MARK in src: return False
    pat = r'@torch\.library\.register_fake\("torchvision::(q?nms)"\)'
    new, n = re.subn(pat, lambda m: f'@(torch.library.register_fake("torchvision::{m.group(1)}") '
                     f'if torchvision.extension._has_ops() else (lambda f: f))  {MARK}', src)
    if n == 0: sys.exit(f"fix_torchvision: no register_fake for nms/qnms found in {path}; cannot fix")
    path.write_text(new)
    return True

if __name__ == "__main__":
    err = import_error()
    if not err: print("torchvision imports fine: nothing to fix"); sys.exit(0)
    if "torchvision::nms does not exist" not in err and "torchvision::qnms" not in err:
        sys.exit(f"torchvision fails to import for another reason: {err}")
    spec = find_spec("torchvision")
    path = Path(spec.origin).parent / "_meta_registrations.py"
    patch(path)
    err = import_error()
    if err: sys.exit(f"torchvision still fails to import after the fix: {err}")
    print(f"torchvision: compiled ops unavailable with this torch; guarded fake registrations in {path.name}, imports now")
