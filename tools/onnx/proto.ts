/**
 * @module
 * Minimal ONNX protobuf encoder for building test, example and benchmark models without Python.
 * Field numbers follow onnx/onnx.proto (ModelProto, GraphProto, NodeProto, TensorProto, ValueInfoProto).
 * Only what our model zoo needs is encoded; this is a dev tool, not part of the server.
 */
import protobuf from 'protobufjs/minimal.js';

const { Writer } = protobuf;
type ProtoWriter = protobuf.Writer;

/** ONNX TensorProto.DataType codes. */
export const OnnxType = {
  FLOAT: 1,
  UINT8: 2,
  INT8: 3,
  UINT16: 4,
  INT16: 5,
  INT32: 6,
  INT64: 7,
  STRING: 8,
  BOOL: 9,
  FLOAT16: 10,
  DOUBLE: 11,
  UINT32: 12,
  UINT64: 13,
} as const;
export type OnnxTypeCode = (typeof OnnxType)[keyof typeof OnnxType];

export interface TensorInit {
  name: string;
  type: OnnxTypeCode;
  dims: number[];
  /** Little-endian raw bytes (all numeric types). */
  raw?: Uint8Array;
  /** For STRING tensors. */
  strings?: string[];
}

export type Dim = number | string;
export interface ValueInfo {
  name: string;
  type: OnnxTypeCode;
  shape: Dim[];
}

export type AttrValue =
  | { kind: 'int'; value: number }
  | { kind: 'float'; value: number }
  | { kind: 'ints'; value: number[] }
  | { kind: 'string'; value: string }
  | { kind: 'tensor'; value: TensorInit };

export interface NodeDef {
  op: string;
  inputs: string[];
  outputs: string[];
  name?: string;
  attrs?: Record<string, AttrValue>;
}

export interface GraphDef {
  name: string;
  nodes: NodeDef[];
  inputs: ValueInfo[];
  outputs: ValueInfo[];
  initializers: TensorInit[];
}

// Wire types: 0 varint, 2 length-delimited, 5 fixed32.
const tag = (w: ProtoWriter, field: number, wire: number): ProtoWriter => w.uint32((field << 3) | wire);

function sub(w: ProtoWriter, field: number, body: (w: ProtoWriter) => void): void {
  tag(w, field, 2).fork();
  body(w);
  w.ldelim();
}

function writeTensor(w: ProtoWriter, t: TensorInit): void {
  for (const d of t.dims) tag(w, 1, 0).int64(d);
  tag(w, 2, 0).int32(t.type);
  if (t.strings) for (const s of t.strings) tag(w, 6, 2).bytes(Buffer.from(s, 'utf8'));
  tag(w, 8, 2).string(t.name);
  if (t.raw) tag(w, 9, 2).bytes(t.raw);
}

function writeValueInfo(w: ProtoWriter, v: ValueInfo): void {
  tag(w, 1, 2).string(v.name);
  sub(w, 2, (tw) => {
    // TypeProto.tensor_type = 1
    sub(tw, 1, (tt) => {
      tag(tt, 1, 0).int32(v.type);
      sub(tt, 2, (sw) => {
        for (const d of v.shape) {
          sub(sw, 1, (dw) => {
            if (typeof d === 'number') tag(dw, 1, 0).int64(d);
            else tag(dw, 2, 2).string(d);
          });
        }
      });
    });
  });
}

function writeAttr(w: ProtoWriter, name: string, a: AttrValue): void {
  tag(w, 1, 2).string(name);
  switch (a.kind) {
    case 'float':
      tag(w, 2, 5).float(a.value);
      tag(w, 20, 0).int32(1);
      break;
    case 'int':
      tag(w, 3, 0).int64(a.value);
      tag(w, 20, 0).int32(2);
      break;
    case 'string':
      tag(w, 4, 2).bytes(Buffer.from(a.value, 'utf8'));
      tag(w, 20, 0).int32(3);
      break;
    case 'tensor':
      sub(w, 5, (tw) => writeTensor(tw, a.value));
      tag(w, 20, 0).int32(4);
      break;
    case 'ints':
      for (const v of a.value) tag(w, 8, 0).int64(v);
      tag(w, 20, 0).int32(7);
      break;
  }
}

function writeNode(w: ProtoWriter, n: NodeDef): void {
  for (const i of n.inputs) tag(w, 1, 2).string(i);
  for (const o of n.outputs) tag(w, 2, 2).string(o);
  if (n.name) tag(w, 3, 2).string(n.name);
  tag(w, 4, 2).string(n.op);
  for (const [k, v] of Object.entries(n.attrs ?? {})) sub(w, 5, (aw) => writeAttr(aw, k, v));
}

/** Encode a complete ModelProto (IR version 8, default-domain opset 17). */
export function encodeModel(g: GraphDef, opset = 17): Uint8Array {
  const w = Writer.create();
  tag(w, 1, 0).int64(8); // ir_version
  tag(w, 2, 2).string('switchyard-tools'); // producer_name
  sub(w, 7, (gw) => {
    for (const n of g.nodes) sub(gw, 1, (nw) => writeNode(nw, n));
    tag(gw, 2, 2).string(g.name);
    for (const t of g.initializers) sub(gw, 5, (tw) => writeTensor(tw, t));
    for (const v of g.inputs) sub(gw, 11, (vw) => writeValueInfo(vw, v));
    for (const v of g.outputs) sub(gw, 12, (vw) => writeValueInfo(vw, v));
  });
  sub(w, 8, (ow) => {
    tag(ow, 1, 2).string('');
    tag(ow, 2, 0).int64(opset);
  });
  return w.finish();
}
