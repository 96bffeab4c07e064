"""setuptools build of dataone-cn-sslverify (debian/ with pybuild is the packaging source of truth)."""

import re

from setuptools import find_packages, setup

with open("dataone_cn_sslverify/__init__.py") as f:
    VERSION = re.search(r'__version__ = "([^"]+)"', f.read()).group(1)

setup(
    name="dataone-cn-sslverify",
    version=VERSION,
    description="Roll out the DataONE CN client-certificate policy to Apache safely",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    author="DataONE CN operations",
    license="Apache-2.0",
    python_requires=">=3.8",
    packages=find_packages(include=["dataone_cn_sslverify", "dataone_cn_sslverify.*"]),
    entry_points={"console_scripts": ["dataone-cn-sslverify = dataone_cn_sslverify.cli:main"]},
    # No data_files: the policy snippet is a dpkg conffile at /etc/dataone/apache2/,
    # installed by debian/dataone-cn-sslverify.install (in both the debian/ and the
    # stdeb build: MANIFEST.in ships that file in the sdist). An absolute data_files
    # path would escape the install prefix of a pip/wheel install.
    classifiers=[
        "Environment :: Console",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
        "Topic :: System :: Systems Administration",
    ],
)
