"""The operator's node agent: `gpux operator agent` and `gpux operator challenge`.

An operator who issues GPU-hour tokens promises to deliver them on a node. The agent makes a
node deliverable: it reads the node's GPU inventory (NVML when a GPU and `nvidia-ml-py` are
present, else a declared profile), registers the node with the venue (`register_node`),
and makes the node's SSH server trust the venue's certificate authority, either by writing
the OpenSSH files (`TrustedUserCAKeys`, `AuthorizedPrincipalsFile`) or by running an
embedded SSH server. `gpux operator challenge` is the command a node's sshd forces for the
venue's prober: it answers the compute challenges (`delivery.challenge`) on stdin/stdout.
"""
