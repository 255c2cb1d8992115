"""`hgpt export-hf` and `hgpt import-hf`: checkpoint conversion to and from transformers."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export-hf", help="write a checkpoint in transformers' GPT-2 layout (safetensors + config.json)"
    )
    p.add_argument("checkpoint", help="checkpoint directory (config.json + model.safetensors)")
    p.add_argument("out_dir", help="output directory, loadable with GPT2LMHeadModel.from_pretrained")
    p.set_defaults(func=_export)

    p = subparsers.add_parser("import-hf", help="turn a transformers GPT-2 directory into a checkpoint")
    p.add_argument("hf_dir", help="directory with config.json and model.safetensors")
    p.add_argument("checkpoint", help="checkpoint directory to write")
    p.set_defaults(func=_import)


def _export(args) -> int:
    from model.checkpoint import resolve_checkpoint
    from model.hf_interop import export_checkpoint

    out = export_checkpoint(resolve_checkpoint(args.checkpoint), args.out_dir)
    print(f"exported {args.checkpoint} -> {out}")
    return 0


def _import(args) -> int:
    from model.hf_interop import import_checkpoint

    out = import_checkpoint(args.hf_dir, args.checkpoint)
    print(f"imported {args.hf_dir} -> {out}")
    return 0
