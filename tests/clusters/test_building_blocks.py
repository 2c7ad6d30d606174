"""PKI, kubeconfigs, specs, process supervision and the no-binaries error: no cluster needed."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conveyor.clusters import kubeconfig
from conveyor.clusters import spec as specs
from conveyor.clusters.pki import ClusterPKI, cluster_cert_specs
from conveyor.clusters.processes import ProcessGroup, ProcessSpec, pids_with_arg
from conveyor.core import containers
from conveyor.core.errors import InvalidInput


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_pki_issues_certificates_signed_by_the_cluster_ca(tmp_path: Path) -> None:
    pki = ClusterPKI(tmp_path / "pki")
    pki.ensure_ca("demo")
    for spec in cluster_cert_specs("demo-node", "10.150.0.1", "10.200.254.2", "10.200.0.1"):
        pki.ensure_cert(spec)
    pki.ensure_service_account_keys()
    ca = _cert(pki.ca_crt)
    ca_key = ca.public_key()
    assert isinstance(ca_key, ec.EllipticCurvePublicKey)

    api = _cert(pki.crt("apiserver"))
    api.verify_directly_issued_by(ca)
    sans = api.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "kubernetes.default.svc" in sans.get_values_for_type(x509.DNSName)
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "10.150.0.1", "10.200.0.1"}
    assert ExtendedKeyUsageOID.SERVER_AUTH in api.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value

    admin = _cert(pki.crt("admin"))
    admin.verify_directly_issued_by(ca)
    assert admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    kubelet = _cert(pki.crt("kubelet-client"))
    assert kubelet.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:demo-node"

    for key in [pki.key("ca"), pki.key("admin"), pki.sa_key]:
        assert key.stat().st_mode & 0o777 == 0o600, key


def test_pki_is_kept_when_ensured_again(tmp_path: Path) -> None:
    pki = ClusterPKI(tmp_path / "pki")
    pki.ensure_ca("demo")
    specs_ = cluster_cert_specs("demo-node", "10.150.0.1", "10.200.254.2", "10.200.0.1")
    for spec in specs_:
        pki.ensure_cert(spec)
    before = {p.name: p.read_bytes() for p in pki.dir.iterdir()}
    pki.ensure_ca("demo")
    for spec in specs_:
        pki.ensure_cert(spec)
    assert {p.name: p.read_bytes() for p in pki.dir.iterdir()} == before


def test_written_kubeconfig_resolves_to_its_credentials(tmp_path: Path) -> None:
    pki = ClusterPKI(tmp_path / "pki")
    pki.ensure_ca("demo")
    for spec in cluster_cert_specs("demo-node", "10.150.0.1", "10.200.254.2", "10.200.0.1"):
        pki.ensure_cert(spec)
    path = tmp_path / "kubeconfig"
    kubeconfig.write(
        path,
        kubeconfig.render(
            cluster="conveyor-demo", server="https://127.0.0.1:6443", ca=pki.ca_crt, user="admin",
            cert=pki.crt("admin"), key=pki.key("admin"),
        ),
    )
    assert path.stat().st_mode & 0o777 == 0o600
    creds = kubeconfig.credentials(path, None, tmp_path / "secrets")
    assert creds.server == "https://127.0.0.1:6443"
    assert creds.context == "conveyor-demo"
    assert creds.ca_file is not None and creds.ca_file.read_bytes() == pki.ca_crt.read_bytes()
    assert creds.cert_file is not None and creds.cert_file.read_bytes() == pki.crt("admin").read_bytes()
    with pytest.raises(InvalidInput, match="no context named 'other'"):
        kubeconfig.credentials(path, "other", tmp_path / "secrets")


def test_cluster_names_are_checked() -> None:
    assert specs.check_name("dev-1") == "dev-1"
    for bad in ["", "Dev", "1abc", "a_b", "x" * 21, "trailing-"]:
        with pytest.raises(InvalidInput):
            specs.check_name(bad)


def test_machine_wide_slots_differ_between_installations(tmp_path: Path) -> None:
    first = tmp_path / "one" / "clusters" / "a"
    second = tmp_path / "two" / "clusters" / "a"
    for d in (first, second):
        d.mkdir(parents=True)
        (d / "cluster.json").write_text("{}")
    i = specs.claim_index(first)
    j = specs.claim_index(second)
    try:
        assert i != j
        assert specs.claim_index(first, i) == i  # re-claiming one's own slot is fine
        with pytest.raises(InvalidInput, match="held by"):
            specs.claim_index(second, i)
    finally:
        specs.release_index(first, i)
        specs.release_index(second, j)


def test_processes_are_detached_tracked_and_stopped(tmp_path: Path) -> None:
    group = ProcessGroup(tmp_path / "run", tmp_path / "logs")
    pid = group.start(ProcessSpec("sleeper", ["sleep", "300"]))
    assert group.running("sleeper") and group.pid("sleeper") == pid
    assert os.getsid(pid) == pid  # its own session: survives the caller
    assert group.start(ProcessSpec("sleeper", ["sleep", "300"])) == pid  # no second copy
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while group.running("sleeper") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not group.running("sleeper")
    new_pid = group.start(ProcessSpec("sleeper", ["sleep", "300"]))
    assert new_pid != pid and group.running("sleeper")
    group.stop("sleeper")
    assert not group.running("sleeper") and not group.pid_file("sleeper").exists()
    assert "starting: sleep 300" in group.log_tail("sleeper")


def test_a_recycled_pid_does_not_count_as_running(tmp_path: Path) -> None:
    group = ProcessGroup(tmp_path / "run", tmp_path / "logs")
    group.run_dir.mkdir()
    # our own pid, but with a start time that is not ours: a pid reused by another process
    group.pid_file("ghost").write_text(f"{os.getpid()} 1\n")
    assert not group.running("ghost")


def test_process_scans_find_matching_and_untracked_copies(tmp_path: Path) -> None:
    """What `cluster create` relies on after an interrupted start: the running copy is recognised by
    its argv, a copy no pid file tracks is found by program and cluster dir, and killed."""
    group = ProcessGroup(tmp_path / "cluster" / "run", tmp_path / "cluster" / "logs")
    marker = f"{tmp_path}/cluster/state"
    spec = ProcessSpec("sleeper", [sys.executable, "-c", "import time; time.sleep(300)", marker])
    pid = group.start(spec)
    try:
        deadline = time.monotonic() + 10  # Popen returns mid-execve, before the new argv is readable
        while not group.matches(spec) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert group.matches(spec)
        assert not group.matches(ProcessSpec("sleeper", [*spec.argv, "--new-flag"]))  # changed: restart it
        assert pid in pids_with_arg(marker)
        assert pid in pids_with_arg(f"(300) {marker} ")  # a trailing space anchors the last argument
        assert pid not in pids_with_arg(f"(300) {marker}x")
        assert group.kill_untracked(spec) == 0  # tracked: left alone
        group.pid_file("sleeper").unlink()  # as if create died before writing it
        assert group.kill_untracked(spec) == 1
        deadline = time.monotonic() + 10
        while pid in pids_with_arg(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pid not in pids_with_arg(marker)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_container_tool_argv_carry_the_machine_settings() -> None:
    run = containers.podman("run", "--rm", "img")
    assert run[:6] == ["podman", "--storage-driver", "vfs", "run", "--runtime", "runc"]
    assert "nofile=1024:1024" in run and run[-2:] == ["--rm", "img"]
    assert containers.buildah("bud", "-t", "x", ".")[:5] == ["buildah", "--storage-driver", "vfs", "bud", "--isolation"]
    assert containers.buildah("push", "x") == ["buildah", "--storage-driver", "vfs", "push", "x"]


def test_create_without_binaries_or_go_names_what_is_missing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("CONVEYOR_KUBE_BIN_DIR", "KUBEBUILDER_ASSETS")}
    env.update(CONVEYOR_CACHE_DIR=str(tmp_path / "cache"), CONVEYOR_GO="", CONVEYOR_DATA_DIR=str(tmp_path / "data"))
    p = subprocess.run(
        [sys.executable, "-m", "conveyor", "cluster", "create", "nobins"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert p.returncode == 1
    assert "missing kube-apiserver" in p.stderr and "install Go" in p.stderr
    assert "CONVEYOR_KUBE_BIN_DIR" in p.stderr
    assert not (tmp_path / "data" / "clusters" / "nobins").exists()  # rolled back


def test_a_certificate_is_reissued_when_its_addresses_change(tmp_path: Path) -> None:
    pki = ClusterPKI(tmp_path / "pki")
    pki.ensure_ca("demo")
    old = cluster_cert_specs("demo-node", "10.150.0.1", "10.200.0.1", "10.200.0.1")[-1]  # a node IP of old
    pki.ensure_cert(old)
    before = pki.crt("kubelet-server").read_bytes()
    new = cluster_cert_specs("demo-node", "10.150.0.1", "10.200.254.2", "10.200.0.1")[-1]
    pki.ensure_cert(new)
    cert = _cert(pki.crt("kubelet-server"))
    assert pki.crt("kubelet-server").read_bytes() != before
    cert.verify_directly_issued_by(_cert(pki.ca_crt))  # by the same CA: clients keep trusting it
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "10.200.254.2" in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}


def test_node_addresses_forwarded_ports_and_dns_agree() -> None:
    from conveyor.clusters import dns, network
    from conveyor.clusters.layout import Layout

    spec = specs.ClusterSpec(name="demo", index=3, registries=["127.0.0.1:8080", "registry.example:5000"],
                             host_ports=[9000])
    spec.ports.api = 6443
    assert (spec.netns, spec.host_veth, spec.bridge) == ("conveyor3", "cnv3h", "cnv3br")
    assert (spec.node_ip, spec.host_link_ip, spec.host_gateway) == ("10.203.254.2", "10.203.254.1", "10.203.0.1")
    # the API server, the loopback registry and the extra port; a registry elsewhere cannot be forwarded
    assert spec.forwarded_ports == [6443, 8080, 9000]
    listens = {fw.listen for fw in network.forwards(spec)}
    assert listens == {(host, port) for host in ("127.0.0.1", "10.203.0.1") for port in (6443, 8080, 9000)}
    assert all(fw.target == ("127.0.0.1", fw.listen[1]) for fw in network.forwards(spec))
    kube_dns = [o for o in dns.manifests(spec) if o["kind"] == "Service"][0]
    assert kube_dns["spec"]["clusterIP"] == spec.dns_ip == "10.153.0.10"
    assert f"{spec.host_gateway} {dns.HOST_NAME}" in dns.corefile(spec)
    from conveyor.clusters.node import kubelet_config

    layout = Layout(Path("/tmp/x"), spec)
    cfg = kubelet_config(layout)
    assert cfg["clusterDNS"] == [spec.dns_ip] and cfg["address"] == spec.node_ip


def test_create_refuses_a_host_port_that_is_no_port(tmp_path: Path) -> None:
    from conveyor.clusters import local

    with pytest.raises(InvalidInput, match="host port 70000 is not a TCP port"):
        local.create(tmp_path, "demo", host_ports=[70000])
    assert not specs.exists(tmp_path, "demo")
