"""setuptools build of dataone-cn-sslverify.

debian/ (pybuild's PEP 517 path, pyproject.toml) is the packaging source of
truth; this file gives setuptools the metadata and serves stdeb
(scripts/build-stdeb), which reads the description from here: the synopsis
and long description are debian/control's (tests/package/test_build.py
compares them).

No console script: the command is sbin/dataone-cn-sslverify, installed to
/usr/sbin by debian/dataone-cn-sslverify.install, with the modules private in
/usr/share/dataone-cn-sslverify. From a checkout: ``python3 -m dataone_cn_sslverify``.
"""

import re

from setuptools import find_packages, setup

with open("dataone_cn_sslverify/__init__.py") as f:
    VERSION = re.search(r'__version__ = "([^"]+)"', f.read()).group(1)


def debian_description():
    """(synopsis, long description) from debian/control: one text for both builds."""
    with open("debian/control") as f:
        text = f.read()
    lines = text[text.index("\nDescription: ") + 1:].splitlines()
    synopsis = lines[0][len("Description: "):]
    body = []
    for line in lines[1:]:
        if not line.startswith(" "):
            break
        body.append("" if line.strip() == "." else line[1:])
    return synopsis, "\n".join(body)


SYNOPSIS, LONG_DESCRIPTION = debian_description()

setup(
    name="dataone-cn-sslverify",
    version=VERSION,
    description=SYNOPSIS,
    long_description=LONG_DESCRIPTION,
    long_description_content_type="text/plain",
    author="DataONE CN operations",
    # No public home page. "UNKNOWN" is the value distutils itself gave a missing
    # url, and the one stdeb maps to "no Homepage field" (setuptools now passes
    # None, which stdeb would write as "Homepage: None").
    url="UNKNOWN",
    license="Apache-2.0",
    python_requires=">=3.6",
    packages=find_packages(include=["dataone_cn_sslverify", "dataone_cn_sslverify.*"]),
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
