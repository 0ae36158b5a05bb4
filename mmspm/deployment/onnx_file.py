"""The exported ONNX file: its metadata (:func:`read_metadata`), and the check
that TensorRT's parser can read it (:func:`check_graph`)."""
from mmengine.config import Config

# The keys of the exported files' metadata_props (:func:`read_metadata`).
METADATA = dict(task='mmspm.task', config='mmspm.config')
# The symbolic dimensions of ``input`` by name.
INPUT_DIMS = ('batch', 'height', 'width')
# Sequence operators: TensorRT's parser has none of them.
SEQUENCE_OPS = frozenset({'SequenceAt', 'SequenceConstruct', 'SequenceEmpty',
                          'SequenceErase', 'SequenceInsert', 'SequenceLength',
                          'SequenceMap', 'SplitToSequence', 'ConcatFromSequence'})


def read_metadata(path: str) -> dict:
    """The mmspm metadata of the ONNX file at ``path`` (see :func:`export_onnx`).

    Args:
        path (str): The ONNX file.

    Returns:
        dict: ``{'task': ..., 'config': Config or None}``.

    Raises:
        ValueError: If the file was not written by mmspm's export.
    """
    import onnx
    props = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
    if METADATA['task'] not in props:
        raise ValueError(f'{path} was not written by mmspm\'s export (no '
                         f'{METADATA["task"]} in its metadata); export it with '
                         f'tools/deployment/pytorch2onnx.py.')
    text = props.get(METADATA['config'])
    return dict(task=props[METADATA['task']],
                config=Config.fromstring(text, '.py') if text else None)


def check_graph(path: str) -> dict:
    """Check the ONNX file at ``path`` as TensorRT's parser needs it.

    Standard operators only (the default domain), no sequence operators, no
    local functions; ``input``'s batch, height and width symbolic (batch 1 in
    a detector's graph, which its metadata names).

    Args:
        path (str): The ONNX file.

    Returns:
        dict: ``{'ops': sorted operator types, 'input_dims': the input's
        dimensions}``.

    Raises:
        ValueError: Naming what is wrong.
    """
    import onnx
    model = onnx.load(path, load_external_data=False)
    graph = model.graph
    nodes = list(graph.node)
    foreign = sorted({f'{n.domain}::{n.op_type}' for n in nodes
                      if n.domain not in ('', 'ai.onnx')})
    sequence = sorted({n.op_type for n in nodes if n.op_type in SEQUENCE_OPS})
    problems = []
    if foreign:
        problems.append(f'non-standard operators {foreign}')
    if sequence:
        problems.append(f'sequence operators {sequence}')
    if model.functions:
        problems.append(f'local functions {[f.name for f in model.functions]}')
    inputs = {i.name: i for i in graph.input}
    if 'input' not in inputs:
        problems.append(f'no graph input named input (found {sorted(inputs)})')
        dims = []
    else:
        dims = [d.dim_param or d.dim_value
                for d in inputs['input'].type.tensor_type.shape.dim]
        props = {p.key: p.value for p in model.metadata_props}
        batch_ok = (dims[:1] == [1] if props.get(METADATA['task']) == 'detector'
                    else dims[:1] and isinstance(dims[0], str))
        if len(dims) != 4 or not batch_ok or any(not isinstance(d, str) for d in dims[2:]):
            problems.append(f'input dimensions {dims} are not symbolic in batch '
                            f'(1 for a detector), height and width')
    if problems:
        raise ValueError(f'{path}: {"; ".join(problems)}.')
    return dict(ops=sorted({n.op_type for n in nodes}), input_dims=dims)
