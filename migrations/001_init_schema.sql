-- ChittyChattyChat schema. Times are timestamptz written from the application clock; IPs are inet.

CREATE TABLE rooms (
  id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  code               text NOT NULL CHECK (code ~ '^[ABCDEFGHJKMNPQRSTUVWXYZ23456789]{4}$'),
  status             text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'active', 'expired', 'archived', 'shredded')),
  created_at         timestamptz NOT NULL,
  created_ip         inet NOT NULL,
  -- a pending room that is never activated lapses at this time
  pending_until      timestamptz NOT NULL,
  activated_at       timestamptz,
  expires_at         timestamptz,
  ended_at           timestamptz,
  end_reason         text CHECK (end_reason IN ('expired', 'ended', 'lapsed')),
  ended_by_slot      smallint CHECK (ended_by_slot IN (1, 2)),
  archived_at        timestamptz,
  archive_key        text,
  archive_sha256     text CHECK (archive_sha256 ~ '^[0-9a-f]{64}$'),
  shredded_at        timestamptz,
  last_seq           bigint NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
  last_activity_at   timestamptz NOT NULL,
  CHECK (status <> 'active' OR (activated_at IS NOT NULL AND expires_at IS NOT NULL)),
  CHECK ((status IN ('pending', 'active')) = (ended_at IS NULL)),
  CHECK ((status IN ('archived', 'shredded')) = (archived_at IS NOT NULL)),
  CHECK ((status = 'shredded') = (shredded_at IS NOT NULL))
);

-- A code is unique among rooms that are not yet expired; an ended room frees its code.
CREATE UNIQUE INDEX rooms_live_code ON rooms (code) WHERE status IN ('pending', 'active');
CREATE INDEX rooms_code ON rooms (code);
CREATE INDEX rooms_created_at ON rooms (created_at DESC);
CREATE INDEX rooms_status_created_at ON rooms (status, created_at DESC);
-- sweeper: what lapses, what expires, what waits for its archive, what is due for shredding
CREATE INDEX rooms_pending_until ON rooms (pending_until) WHERE status = 'pending';
CREATE INDEX rooms_expires_at ON rooms (expires_at) WHERE status = 'active';
CREATE INDEX rooms_awaiting_archive ON rooms (ended_at) WHERE status = 'expired';
CREATE INDEX rooms_archived_at ON rooms (archived_at) WHERE status = 'archived';

CREATE TABLE room_keys (
  room_id       uuid PRIMARY KEY REFERENCES rooms (id) ON DELETE CASCADE,
  -- id of the master key that wrapped the data key (first 8 bytes of a SHA-256, hex)
  kek_id        text NOT NULL CHECK (kek_id ~ '^[0-9a-f]{16}$'),
  wrapped_key   bytea,
  created_at    timestamptz NOT NULL,
  rewrapped_at  timestamptz,
  destroyed_at  timestamptz,
  CHECK ((wrapped_key IS NULL) = (destroyed_at IS NOT NULL))
);
CREATE INDEX room_keys_kek_id ON room_keys (kek_id) WHERE wrapped_key IS NOT NULL;

CREATE TABLE participants (
  id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  room_id        uuid NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
  slot           smallint NOT NULL CHECK (slot IN (1, 2)),
  -- SHA-256 of the device token; the token itself is never stored
  device_hash    bytea NOT NULL CHECK (octet_length(device_hash) = 32),
  display_name   text CHECK (char_length(display_name) BETWEEN 1 AND 40),
  user_agent     text CHECK (char_length(user_agent) <= 512),
  first_ip       inet NOT NULL,
  last_ip        inet NOT NULL,
  joined_at      timestamptz NOT NULL,
  last_seen_at   timestamptz NOT NULL,
  UNIQUE (room_id, slot),
  UNIQUE (room_id, device_hash)
);
CREATE INDEX participants_device_hash ON participants (device_hash);

CREATE TABLE messages (
  room_id         uuid NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
  seq             bigint NOT NULL CHECK (seq > 0),
  participant_id  uuid REFERENCES participants (id) ON DELETE CASCADE,
  kind            text NOT NULL CHECK (kind IN ('text', 'image', 'system')),
  -- the sender's idempotency key: a retried send stores nothing new
  client_msg_id   uuid,
  -- version | nonce | ciphertext | tag, AAD = room id + seq; NULL once the room key is shredded
  body_sealed     bytea,
  sender_ip       inet,
  created_at      timestamptz NOT NULL,
  PRIMARY KEY (room_id, seq),
  UNIQUE (participant_id, client_msg_id),
  CHECK ((kind = 'system') = (participant_id IS NULL))
);

CREATE TABLE attachments (
  id              uuid PRIMARY KEY,
  room_id         uuid NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
  message_seq     bigint NOT NULL,
  participant_id  uuid NOT NULL REFERENCES participants (id) ON DELETE CASCADE,
  object_key      text NOT NULL,
  thumb_key       text NOT NULL,
  content_type    text NOT NULL CHECK (content_type IN ('image/jpeg', 'image/png', 'image/webp', 'image/gif')),
  thumb_content_type text NOT NULL CHECK (thumb_content_type IN ('image/jpeg', 'image/png', 'image/webp', 'image/gif')),
  bytes           integer NOT NULL CHECK (bytes > 0),
  width           integer NOT NULL CHECK (width > 0),
  height          integer NOT NULL CHECK (height > 0),
  thumb_bytes     integer NOT NULL CHECK (thumb_bytes > 0),
  thumb_width     integer NOT NULL CHECK (thumb_width > 0),
  thumb_height    integer NOT NULL CHECK (thumb_height > 0),
  sender_ip       inet NOT NULL,
  created_at      timestamptz NOT NULL,
  deleted_at      timestamptz,
  FOREIGN KEY (room_id, message_seq) REFERENCES messages (room_id, seq) ON DELETE CASCADE,
  UNIQUE (room_id, message_seq)
);

CREATE TABLE audit_events (
  id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  at              timestamptz NOT NULL,
  -- 'chat' or 'admin': which listener saw it
  source          text NOT NULL CHECK (source IN ('chat', 'admin', 'system')),
  action          text NOT NULL CHECK (action ~ '^[a-z][a-z0-9_.]*$'),
  room_id         uuid REFERENCES rooms (id) ON DELETE SET NULL,
  -- kept even if the room row goes, so the trail stays searchable by code
  room_code       text,
  participant_id  uuid REFERENCES participants (id) ON DELETE SET NULL,
  ip              inet,
  user_agent      text CHECK (char_length(user_agent) <= 512),
  device_prefix   text CHECK (device_prefix ~ '^[0-9a-f]{1,16}$'),
  detail          jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_events_at ON audit_events (at DESC, id DESC);
CREATE INDEX audit_events_room_code ON audit_events (room_code, at DESC);
CREATE INDEX audit_events_action ON audit_events (action, at DESC);
CREATE INDEX audit_events_ip ON audit_events (ip, at DESC);
CREATE INDEX audit_events_room_id ON audit_events (room_id);
