"""The runner: claims runs from a Conveyor server over its HTTP API and executes them.

It holds nothing but the server's URL and a runner token: no database, no data dir. ``conveyor up``
runs one in-process (``--runners N``) through the very same HTTP API, so there is one code path.
Modules: client (the protocol, with retries that outlast a server restart), logbuf (buffered log
chunks), plan (the order steps run in: sequential, or a ``needs:`` DAG), podman (the executor:
each step in a container on a network of its own), execute (one run), main (the claim loop); the
Kubernetes executor: kuberun (a run whose steps are a pod's containers), kubepod (that pod and its
Secret, as data), kubernetes (the pod's life through the API server: create, follow, delete, sweep).
"""
