"""The cluster job files of docs/cluster.md (examples/cluster/) are checked as far as a machine without
SLURM or Kubernetes can: the scripts parse, the manifests are valid YAML of the kinds they name, and every
torchrun / accelerate launch command in them parses with that launcher's own argument parser and starts
`flux train ... --resume` with an output_dir every node can share."""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest
import yaml
from paths import REPO

EXAMPLES = REPO / "examples" / "cluster"
SCRIPTS = sorted(EXAMPLES.glob("*.sbatch"))
MANIFESTS = sorted(EXAMPLES.glob("*.yaml"))


def launch_commands(text: str) -> list[list[str]]:
    """The torchrun and accelerate launch command lines in ``text`` as argument lists, the shell's
    substitutions replaced by sample values (what the launcher's parser sees on a cluster)."""
    joined = re.sub(r"\\\n\s*", " ", text)
    commands = []
    for line in joined.splitlines():
        match = re.search(r"\b(torchrun|accelerate launch)\b(.*)", line)
        if match is None or line.lstrip().startswith("#"):
            continue
        command = re.sub(r"\$\(\((.*?)\)\)", "16", match.group(0))  # $((arithmetic))
        command = re.sub(r"\$\(command -v flux\)", "/usr/bin/flux", command)
        command = command.rstrip("'")  # the end of srun bash -c '...'
        tokens = [re.sub(r"\$\{?\w+\}?", "1", token) for token in shlex.split(command)]
        commands.append(tokens)
    return commands


def container_scripts(manifest) -> str:
    """The shell scripts the manifest's containers run (``bash -c ARGS``), one per line."""
    scripts = []
    for document in yaml.safe_load_all(manifest.read_text()):
        specs = document["spec"].get("pytorchReplicaSpecs", {"Job": document["spec"]}).values()
        for spec in specs:
            if "template" in spec:
                for container in spec["template"]["spec"]["containers"]:
                    assert container["command"] == ["bash", "-c"]
                    scripts += container["args"]
    return "\n".join(scripts)


def commands_of(path) -> list[list[str]]:
    return launch_commands(container_scripts(path) if path.suffix == ".yaml" else path.read_text())


def test_every_example_is_linked_from_the_cluster_page_and_the_page_from_the_readme():
    page = (REPO / "docs" / "cluster.md").read_text()
    assert {path.name for path in [*SCRIPTS, *MANIFESTS]} == {
        "slurm-torchrun.sbatch",
        "slurm-accelerate.sbatch",
        "k8s-indexed-job.yaml",
        "k8s-pytorchjob.yaml",
    }
    for path in [*SCRIPTS, *MANIFESTS]:
        assert f"(../examples/cluster/{path.name})" in page
    assert "(docs/cluster.md)" in (REPO / "README.md").read_text()


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_slurm_scripts_parse_and_launch_flux_train_resume(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    text = script.read_text()
    assert "#SBATCH --nodes=2" in text and "#SBATCH --signal=TERM@" in text and "srun " in text
    assert len(launch_commands(text)) == 1


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda path: path.name)
def test_kubernetes_manifests_are_valid_yaml_with_a_shared_run_volume(manifest):
    documents = list(yaml.safe_load_all(manifest.read_text()))
    kinds = [document["kind"] for document in documents]
    assert kinds in (["Service", "Job"], ["PyTorchJob"])
    text = manifest.read_text()
    assert "persistentVolumeClaim" in text and "output_dir=/runs/" in text
    assert len(commands_of(manifest)) in (1, 2)  # a PyTorchJob's master and worker run the same


@pytest.mark.parametrize("path", [*SCRIPTS, *MANIFESTS], ids=lambda path: path.name)
def test_launch_commands_parse_with_the_launchers_own_parsers(path):
    command = commands_of(path)[0]
    if command[0] == "torchrun":
        from torch.distributed.run import get_args_parser

        args = get_args_parser().parse_args(command[1:])
        assert args.training_script.endswith("flux")
        assert args.shutdown_timeout >= 60  # time for the step and one checkpoint after SIGTERM
        program = args.training_script_args
    else:
        from accelerate.commands.launch import launch_command_parser

        args = launch_command_parser().parse_args(command[2:])
        assert args.module and args.training_script == "flux_core.cli"
        assert (REPO / args.config_file).is_file()
        assert args.num_machines and args.machine_rank is not None and args.main_process_ip
        program = args.training_script_args
    assert program[0] == "train" and program[-1] == "--resume"
