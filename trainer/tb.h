/* tb.h: TensorBoard event files (RUN/tb/events.out.tfevents.TIME.HOST),
 * written from metrics.jsonl's records ([log] tensorboard; docs/train.md
 * "TensorBoard").
 *
 * A file is a sequence of TFRecords (uint64 length, masked CRC32C of the
 * length, the data, masked CRC32C of the data), each holding one Event
 * protocol-buffer message: the first {wall_time, file_version
 * "brain.Event:2"}, then one {wall_time, step, summary} per record with one
 * simple_value per number of the record. The few protobuf fields are
 * encoded here by hand (tb.c's put_*), as is CRC32C (tb_crc32c): Debian
 * 12 has no CRC32C library of its own (apt-cache search crc32c: only
 * python3-crc32c; Intel ISA-L, libisal-dev, has one inside a storage
 * acceleration library), and protobuf-c (libprotobuf-c-dev,
 * protobuf-c-compiler) would add a .proto and a code generator to the
 * build for five fields. A table-driven CRC32C and a varint are smaller
 * than either dependency.
 *
 * Tags: the record's type, its string fields other than "type" (an eval
 * record's split), then the key path of the number, joined by '/':
 * {"type":"train","step":3,"loss":2.5,"loss_by_source":{"med":2.1}} gives
 * train/loss and train/loss_by_source/med at step 3; array elements are
 * keyed by their index (train/moe_load_max/0). "step" is the Event's step,
 * not a value; null numbers (not finite) are left out. */
#ifndef DAPT_TB_H
#define DAPT_TB_H

#include <stddef.h>
#include <stdint.h>

typedef struct Tb Tb;

/* Creates RUN/tb (with its parents) and a new event file there (another
 * name when one of this second and host exists: a resumed run adds a file,
 * TensorBoard merges them), and writes the file_version event. */
int tb_open(Tb **out, const char *run_dir, char *err, size_t err_len);
/* NULL is a no-op. */
void tb_close(Tb *tb);
/* The event file's path. */
const char *tb_path(const Tb *tb);
/* Writes the numbers of one metrics.jsonl record (a JSON object with an
 * integer "step"; a record without one is skipped) as one event and
 * flushes the file. 0 or err names the file and the cause. */
int tb_write_record(Tb *tb, const char *json, double wall_time, char *err, size_t err_len);
/* Flushes and fsyncs the file. */
int tb_sync(Tb *tb, char *err, size_t err_len);

/* CRC32C (Castagnoli, reflected polynomial 0x82F63B78) of n bytes;
 * "123456789" gives 0xE3069283. */
uint32_t tb_crc32c(const void *data, size_t n);

#endif
