import java.io.BufferedReader;
import java.io.BufferedWriter;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStreamWriter;
import java.nio.charset.StandardCharsets;
import java.util.HexFormat;

import org.apache.kafka.clients.producer.internals.BuiltInPartitioner;
import org.apache.kafka.common.utils.Utils;

/**
 * Reference answers for archiver/partitioner.py from the Kafka client itself.
 *
 * <p>Usage: {@code java PartitionFor <partitions>}. Reads one hex-encoded key per line on stdin
 * (an empty line is the empty key) and prints, per key, {@code murmur2 partition builtin}:
 * {@code Utils.murmur2(key)}, {@code Utils.toPositive(Utils.murmur2(key)) % partitions} and
 * {@code BuiltInPartitioner.partitionForKey(key, partitions)}, the producer's default for keyed
 * records.
 */
public final class PartitionFor {
    public static void main(String[] args) throws IOException {
        if (args.length != 1) {
            System.err.println("usage: PartitionFor <partitions>");
            System.exit(2);
        }
        int partitions = Integer.parseInt(args[0]);
        HexFormat hex = HexFormat.of();
        var ascii = StandardCharsets.US_ASCII;
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, ascii));
        BufferedWriter out = new BufferedWriter(new OutputStreamWriter(System.out, ascii));
        for (String line = in.readLine(); line != null; line = in.readLine()) {
            byte[] key = hex.parseHex(line);
            int hash = Utils.murmur2(key);
            out.write(hash + " " + Utils.toPositive(hash) % partitions + " "
                    + BuiltInPartitioner.partitionForKey(key, partitions) + "\n");
        }
        out.flush();
    }
}
