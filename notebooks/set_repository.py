"""Points the notebooks' Colab set-up and the README's "Open in Colab" links at the repository.

  python notebooks/set_repository.py https://github.com/<owner>/<name>

The URL lives in pyproject.toml ([project.urls] Repository); this script writes it there and
into the two places that cannot read it (a notebook opened on Colab has no checkout yet, and the
README's links are static). tests/test_notebooks.py checks that all of them agree.
"""

import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = ["score_sde_walkthrough.ipynb", "image_models.ipynb"]


def main(url: str) -> None:
  match = re.fullmatch(r"https://github\.com/([\w.-]+/[\w.-]+?)/?", url)
  if not match:
    sys.exit(f"error: url={url!r}: expected https://github.com/<owner>/<name>")
  url, slug = f"https://github.com/{match.group(1)}", match.group(1)
  path = os.path.join(ROOT, "pyproject.toml")
  text = open(path).read()
  open(path, "w").write(re.sub(r'^Repository = ".*"$', f'Repository = "{url}"', text, flags=re.M))
  path = os.path.join(ROOT, "README.md")
  text = open(path).read()
  open(path, "w").write(re.sub(r"colab\.research\.google\.com/github/[^)\s]+?/blob/main/notebooks/",
                               f"colab.research.google.com/github/{slug}/blob/main/notebooks/", text))
  for name in NOTEBOOKS:
    path = os.path.join(ROOT, "notebooks", name)
    with open(path) as f:
      nb = json.load(f)
    for cell in nb["cells"]:
      cell["source"] = [re.sub(r'^REPOSITORY = "[^"]*"', f'REPOSITORY = "{url}"', line)
                        for line in cell["source"]]
    with open(path, "w") as f:
      json.dump(nb, f, indent=1, ensure_ascii=False)
      f.write("\n")
  print(f"repository: {url}")


if __name__ == "__main__":
  if len(sys.argv) != 2:
    sys.exit(__doc__)
  main(sys.argv[1])
