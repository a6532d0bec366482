# The top-level themes/ and sample-configs/ folders ship inside the wheel as
# the data packages console.themes and console.sample_configs, so an installed
# copy finds them with importlib.resources. pyproject.toml cannot map a folder
# to a package name while also discovering packages, hence this file.
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["engine", "engine.*", "console", "console.*"])
    + ["console.themes", "console.sample_configs"],
    package_dir={"console.themes": "themes", "console.sample_configs": "sample-configs"},
    package_data={
        "console": ["*.tcss", "**/*.tcss"],
        "console.themes": ["*.toml"],
        "console.sample_configs": ["*.toml"],
    },
)
