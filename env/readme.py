"Write README.md from nbs/index.ipynb (quarto, which `nbdev-readme` needs, cannot be installed here). `--check` only compares."
import json, sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent

def render(nb_path=root/'nbs'/'index.ipynb'):
    "Markdown cells as they are, code cells as fenced Python blocks"
    cells = json.loads(nb_path.read_text())['cells']
    parts = []
    for c in cells:
        src = ''.join(c['source']).strip()
        if not src or src.startswith('#| hide'): continue
        parts.append(src if c['cell_type'] == 'markdown' else f"```python\n{src}\n```")
    return "<!-- Generated from nbs/index.ipynb by env/readme.py: edit the notebook, not this file. -->\n\n" + '\n\n'.join(parts) + '\n'

if __name__ == '__main__':
    txt, out = render(), root/'README.md'
    if '--check' in sys.argv:
        ok = out.exists() and out.read_text() == txt
        print('README.md is in sync with nbs/index.ipynb' if ok else 'README.md differs from nbs/index.ipynb: run env/readme.py')
        sys.exit(0 if ok else 1)
    out.write_text(txt); print(f'wrote {out.name}')
