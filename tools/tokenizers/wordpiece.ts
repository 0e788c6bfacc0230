/**
 * @module
 * Small Hugging Face `tokenizer.json` documents for tests and benchmarks (nothing downloaded): a BERT-style
 * WordPiece tokenizer over a vocabulary the caller gives, with [PAD]/[UNK]/[CLS]/[SEP] at ids 0–3.
 */

/** An `added_tokens` entry marked special. */
export const special = (id: number, content: string) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });

/**
 * A BERT WordPiece tokenizer (lower-casing BertNormalizer, BertPreTokenizer, `[CLS] A [SEP]` / `[CLS] A [SEP] B [SEP]`,
 * `##` continuations). `vocab` must map [PAD], [UNK], [CLS] and [SEP] to 0, 1, 2 and 3.
 */
export function bertWordPiece(vocab: Readonly<Record<string, number>>) {
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [special(0, '[PAD]'), special(1, '[UNK]'), special(2, '[CLS]'), special(3, '[SEP]')],
    normalizer: { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
    pre_tokenizer: { type: 'BertPreTokenizer' },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '[CLS]', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '[SEP]', type_id: 0 } }],
      pair: [
        { SpecialToken: { id: '[CLS]', type_id: 0 } },
        { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: '[SEP]', type_id: 0 } },
        { Sequence: { id: 'B', type_id: 1 } },
        { SpecialToken: { id: '[SEP]', type_id: 1 } },
      ],
      special_tokens: { '[CLS]': { id: '[CLS]', ids: [2], tokens: ['[CLS]'] }, '[SEP]': { id: '[SEP]', ids: [3], tokens: ['[SEP]'] } },
    },
    decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
    model: { type: 'WordPiece', unk_token: '[UNK]', continuing_subword_prefix: '##', max_input_chars_per_word: 100, vocab },
  };
}
