import fp from 'fastify-plugin';
import { DomainError } from '../domain-error.ts';

export type FormFields = Record<string, string | string[]>;

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

function decodeComponent(text: string): string {
  // decodeURIComponent throws on a malformed escape or an escape that is not UTF-8.
  return decodeURIComponent(text.replace(/\+/g, ' '));
}

/** Parses an urlencoded body strictly: invalid UTF-8, raw or percent-encoded, is refused. */
export function parseFormBody(body: Buffer): FormFields {
  let text: string;
  let fields: FormFields;
  try {
    text = strictUtf8.decode(body);
    fields = Object.create(null) as FormFields;
    for (const pair of text.split('&')) {
      if (pair === '') continue;
      const separator = pair.indexOf('=');
      const name = decodeComponent(separator === -1 ? pair : pair.slice(0, separator));
      const value = separator === -1 ? '' : decodeComponent(pair.slice(separator + 1));
      const existing = fields[name];
      fields[name] =
        existing === undefined ? value : [...(Array.isArray(existing) ? existing : [existing]), value];
    }
  } catch {
    throw new DomainError('invalid', 'The form could not be read: it is not valid UTF-8 text.', {
      title: 'Unreadable form',
    });
  }
  return fields;
}

/**
 * The chat accepts form posts (and, where a route registers it, multipart uploads) only. JSON
 * and text/plain bodies are refused with 415: nothing here speaks them, and text/plain is a
 * "simple" cross-site content type. Unlike @fastify/formbody, which silently replaces invalid
 * UTF-8, bad bytes get a 400 instead of being stored as something the sender did not write.
 */
export const formBodyPlugin = fp<{ bodyLimit: number }>(
  async (app, { bodyLimit }) => {
    app.removeContentTypeParser(['application/json', 'text/plain']);
    app.addContentTypeParser(
      'application/x-www-form-urlencoded',
      { parseAs: 'buffer', bodyLimit },
      (_request, body, done) => {
        try {
          done(null, parseFormBody(body as Buffer));
        } catch (error) {
          done(error as Error, undefined);
        }
      },
    );
  },
  { name: 'form-body' },
);
