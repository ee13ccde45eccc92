"""A Prometheus behind auth for the tests, like OpenShift's thanos-querier: Debian's nginx as a TLS reverse proxy
(a certificate of a test CA made by openssl) that answers 401 unless the request carries `Authorization: Bearer
<token>`. nginx runs in the foreground, in one process, in a folder of its own (config, pid, logs, temp files)."""
from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sim.process import ManagedProcess
from sim.prometheus import free_port


@dataclass(frozen=True)
class Certificates:
    """A test CA and a server certificate it signed for 127.0.0.1 (PEM files)."""

    ca: Path
    cert: Path
    key: Path


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


def make_certificates(folder: Path) -> Certificates:
    """A CA, and a certificate for IP 127.0.0.1 signed by it, each valid for a day."""
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    cert, key, csr, ext = folder / "server.pem", folder / "server.key", folder / "server.csr", folder / "server.ext"
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl("req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", "1", "-subj", "/CN=chargeback test CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    ext.write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                   "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
            "-out", str(cert), "-days", "1", "-extfile", str(ext))
    return Certificates(ca, cert, key)


@dataclass(frozen=True)
class AuthProxy:
    """The proxy's https URL, the CA that signed its certificate, and its access log (request lines and statuses,
    never headers)."""

    url: str
    ca: Path
    access_log: Path


@contextmanager
def auth_proxy(folder: Path, upstream: str, token: str) -> Iterator[AuthProxy]:
    """nginx on a free 127.0.0.1 port: TLS, 401 without `Authorization: Bearer <token>`, else `upstream`'s answer;
    ready once its plain-HTTP /ready port answers."""
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    assert nginx, "Debian's nginx is part of the test set-up (make test-setup / .ci/run)"
    certificates = make_certificates(folder / "tls")
    prefix = folder / "nginx"
    prefix.mkdir(parents=True)
    port, ready = free_port(), free_port()
    access_log = prefix / "access.log"
    conf = prefix / "nginx.conf"
    conf.write_text(f"""master_process off;
error_log stderr warn;
events {{ worker_connections 64; }}
http {{
    access_log {access_log};
    client_body_temp_path body;
    proxy_temp_path proxy;
    fastcgi_temp_path fastcgi;
    uwsgi_temp_path uwsgi;
    scgi_temp_path scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {certificates.cert};
        ssl_certificate_key {certificates.key};
        location / {{
            if ($http_authorization != "Bearer {token}") {{ return 401; }}
            proxy_pass {upstream.rstrip('/')};
        }}
    }}
    server {{
        listen 127.0.0.1:{ready};
        location = /ready {{ return 200 "ready"; }}
    }}
}}
""")
    process = ManagedProcess("nginx", [nginx, "-c", str(conf), "-p", str(prefix),
                                       "-g", f"daemon off; pid {prefix / 'nginx.pid'};"],
                             str(prefix / "nginx.log"), f"http://127.0.0.1:{ready}/ready")
    process.start()
    try:
        yield AuthProxy(f"https://127.0.0.1:{port}", certificates.ca, access_log)
    finally:
        process.stop()
