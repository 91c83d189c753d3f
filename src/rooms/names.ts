import { createHash } from 'node:crypto';

const ADJECTIVES = [
  'Amber',
  'Brave',
  'Bright',
  'Calm',
  'Clever',
  'Cosy',
  'Curious',
  'Daring',
  'Gentle',
  'Golden',
  'Happy',
  'Honest',
  'Jolly',
  'Kind',
  'Lively',
  'Lucky',
  'Merry',
  'Mellow',
  'Nimble',
  'Plucky',
  'Quiet',
  'Rapid',
  'Silver',
  'Sunny',
  'Swift',
  'Tidy',
  'Witty',
  'Zesty',
  'Cheery',
  'Breezy',
];
const ANIMALS = [
  'Otter',
  'Falcon',
  'Panda',
  'Fox',
  'Heron',
  'Badger',
  'Koala',
  'Lynx',
  'Robin',
  'Walrus',
  'Beaver',
  'Dolphin',
  'Gecko',
  'Hedgehog',
  'Ibis',
  'Jaguar',
  'Lemur',
  'Magpie',
  'Narwhal',
  'Owl',
  'Penguin',
  'Quokka',
  'Raven',
  'Seal',
  'Tapir',
  'Turtle',
  'Wombat',
  'Yak',
  'Zebra',
  'Puffin',
];

export const NAME_OPTION_COUNT = 6;

/**
 * The display names offered to the participant in `slot` of a room. Derived from the room id
 * and slot, so the same options come back when the form is posted and nothing needs storing;
 * `taken` (the partner's name) is never offered.
 */
export function nameOptions(roomId: string, slot: 1 | 2, taken?: string | null): string[] {
  const options: string[] = [];
  for (let counter = 0; options.length < NAME_OPTION_COUNT; counter++) {
    const digest = createHash('sha256').update(`names:${roomId}:${slot}:${counter}`).digest();
    const name = `${ADJECTIVES[digest.readUInt16BE(0) % ADJECTIVES.length]} ${ANIMALS[digest.readUInt16BE(2) % ANIMALS.length]}`;
    if (name !== taken && !options.includes(name)) options.push(name);
  }
  return options;
}
