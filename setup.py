import re
from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
# The version is stated once, in src/farslip/version.py (`farslip --version` prints it).
version = re.search(r'^__version__ = "([^"]+)"$', (here / "src/farslip/version.py").read_text(), re.M).group(1)
requirements = [
    line.split("#")[0].strip()
    for line in (here / "requirements.txt").read_text().splitlines()
    if line.split("#")[0].strip()
]

setup(
    name="farslip",
    version=version,
    description="FarSLIP: CLIP adaptation for fine-grained remote-sensing understanding "
    "(training, evaluation and released checkpoints)",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    package_dir={"": "src"},
    packages=find_packages("src"),
    package_data={"farslip": ["model_configs/*.json", "eval/classnames/*.txt"]},
    install_requires=requirements,
    extras_require={"test": ["pytest>=7.4"], "tensorboard": ["tensorboard"], "wandb": ["wandb"]},
    entry_points={"console_scripts": ["farslip=farslip.cli:main"]},
)
