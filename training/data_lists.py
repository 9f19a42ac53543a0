"""Vocabulary the synthetic instruct data draws from: words, first names, countries.

The word list holds common lowercase English words of 3-10 letters (chosen once from the
words shared by Python's standard library text and Mistral's v1 vocabulary) and is frozen here
so the generated data never depends on the environment.
"""

from __future__ import annotations

_WORDS_TEXT = """
abc ability able abort about above abs absolute abstract acc accept acceptable accepted
accepting accepts access accessed accessible according account accounts accuracy accurate
achieve achieved acquire across act action actions activate activation active activity acts
actual actually adapted adapter add added adding addition additional addr address addresses adds
adj adjacent adjust adjusted advance advanced advantage affect affected affects affiliates after
again against age agent agree ahead aim ain alarm alg algebra algo algorithm algorithms alias
align aligned alignment alive all allocate allocated allow allowed allowing allows almost alone
along alpha already also alt alter alternate although always among amount amounts amplitude
analog analysis ancestors anchor and ang angle angles angular ann announce anonymous another ans
answer any anymore anything anyway anywhere apart api app appear appearing appears append apple
applicable applied applies apply applying approach approx arbitrary arc arch archive are area
aren arg args argument arguments argv around arr array arrays arrow article ask asked asp assert
assign assigned assignment associated assume assumed assumes assuming assumption ast astr async
atom atomic atoms att attach attached attachment attempt attempted attempting attempts attention
attr attribute attributes attrs audio audit auth author authority authors auto automatic aux
available average avoid avoided await aware away aws axis back backend background backup
backward backwards bad bag band bands bar bare barrier base based baseline bases basic basically
basis bat batch beam because become becomes been before begin beginning begins behave behavior
behaviour behind being bell belong belongs below bench benefit best beta better between beyond
bias big bigger bin binary bind binding bio bird bit bitmap bits black blank blink blob block
blocked blocking blocks blue bob bodies body bold book bool boolean border bot both bother
bottom bound boundaries boundary bounded bounds box bra brace branch branches break breaking
breaks broadcast broken brown browser bucket buf buff buffer buffers bug bugs build builder
building builds built bunch bundle but butter button buttons byte bytes cache cached cal calc
calculate calculated calendar call callback called caller calling calls can cancel cancelled
candidate candidates cannot canonical canvas cap capacity capital caps capture captured care
careful carefully case cases cast casting cat catalog catch categories category caught cause
caused causes causing caution ceiling cell cells center centered central cert certain cfg chain
chance change changed changes changing channel channels char character characters charge check
checked checking checks chi child children choice choices choose choosing chop chosen chr chunk
chunks circ circle circuit circular class classes classic clause clean cleaned cleanup clear
cleared click client clients clinic clip clock clone close closed closer closest closing closure
cls cluster clusters cmd cnt code codes coding coeff col collapse collapsed collect collected
collecting collection colon color colors column columns com comb combine combined combining come
comes coming comm command commands comment comments commit common commonly community comp
compact companion comparable compare compared comparing comparison compat compatible compile
compiled compiler complement complete completed completely completion complex complexity
compliance component components composed composite compound compress compute computed computer
computing con concepts concrete cond condition conditions conf confidence config configure
configured confirm conflict conflicts conj conn connect connected connecting connection cons
consider considered consistent consisting consists console const constant constants constr
constraint construct consume consumed cont contact contacts contain contained container
containers containing contains content contents context continue continued continuous contract
contrast control controlled controls conv convenient convention conversion convert converted
cookie cookies coord coordinate copied copies copy copyright core corner corners correct
correction correctly correspond cos cost cot could couldn count counted counter counting counts
couple coupling course cov cover coverage covered covers cpu crash create created creates
creating creation creator criteria critical cross crypt crypto css ctrl ctx cur curl curr
current currently cursor curve curves custom customer cut cuts cycle cycles danger dark dash dat
data database dataset datasets date dates datetime day days dead deadline deal dealing debug dec
decide decimal decision decl declare declared decode decorated decrease deep def default
defaults defect define defined defines defining definitely definition deg degree degrees del
delay delegate delete deleted delivery delta demand demo den denom denote denoted denotes dense
density dep depend dependency dependent depending depends deployment depth der deriv derivative
derive derived desc descend describe described describes describing descriptor design designed
desired dest destroy destroyed det detail detailed details detect detected detection determine
determined determines dev device devices diagonal diagram dialect dialog diameter dic dict
dictionary did didn dif diff differ difference different difficult digest digit digital dim
dimension dimensions dir direct directed direction directions directly directory dis disable
disabled disc disclaimer discover discovered discovery discrete discussion disk disp dispatch
display displayed displays dist distance distances distinct distribute div divide divided
division django doc document documented documents dod does doesn dog doing doit dok dom domain
domains don done dot double down download draft draw drawing drawn drive driver drop dropped dst
dtype dual duck due dummy dump dup duplicate duration during dynamic dynamics each eager earlier
early easier easily east easy echo economic edge edges edit editor effect effective effects
efficiency efficient egg eggs either electron elem element elementary elements elif eliminate
ell else elsewhere email embed embedded embedding emit empty enable enabled enables enc encode
encoded encoding encryption end ending endpoint ends energy enforce engine enough ensure ensures
ensuring enter entered entering entire entirely entities entity entries entropy entry enum env
envelope environ epoch equal equality equally equals equation equations equivalent err error
errors esc escape escaped especially est estimate estimated estimates estimation etc eval
evaluate evaluated evaluation even event events eventually ever every everything evil evt exact
exactly example examples exc exceed except exception exceptions excess exclude excluded
exclusive exec execute executed execution exhausted exist existence existing exists exit exp
expand expanded expansion expect expected expecting expects expensive explain explicit
explicitly exponent export exports expose exposed expr express expressed expression ext extend
extended extends extension extensions extent extern external extra extract extracted extreme
extremely eye fac face faces fact factor factors factory facts fail failed failing fails failure
failures fairly fake fall falling falls false family fancy far fast faster fastest fatal fault
favor feature features feed fetch few fewer fib fiber fid field fields fig figure file filename
files fill filled filling filter filtered filters final finally find finding finds fine finish
finished finite first fish fit fits fitting five fix fixed fixture flag flags flat fleet
flexible flip float floating floor flow flush fmt focus fold folded folder follow followed
following follows font foo foot for force forced forces forcing forecast forest forever forget
fork form formal format formats formed former forms formula forward found four fourth fraction
frag fragment fragments frame frames framework free freedom freeze frequency fresh friendly fro
from front frozen full fully fun func function functional functions further fut future gain gap
garbage gate gather gathered gen general generally generate generated generates generating
generation generator generic geometric geometry get gets getting git give given gives giving
glob global goes going golden gone good google got goto governing grad gradient grant granted
graph graphics graphs gray greater green grid ground group groups guarantee guaranteed guard
guess guide hack had half ham hand handle handled handler handles handling hang happen happened
happens hard has hash hasn hat have haven having head header headers heading health heap height
held help helper helpful helps hence here hex hidden hide hierarchy high higher highest
highlight highlights hint hist history hit hits hold holding holds holidays home hook hooks hop
hope horizontal host hosts hour hours how however href html http https hub huge human hyper
hypothesis icon idea ideal ident identical identified identifier identify identity idle ids idx
ignore ignored ignoring ill illegal imag image images imaginary img immediate imp impl implement
implements implicit implied implies imply import important imported imports impossible improve
improved inc inch incident include included includes including inclusive incoming incorrect
increase increased increases increasing increment ind indent index indicate indicated indicates
indicating indicator indices indirect individual induced inequality inf infer infinite info
inherit inherited init initial initialize initially inject inline inner input inputs ins insert
inserted inside inspect inst install installed instance instances instead instr int integer
integral integrate intended intent inter interact interest interested interface interior intern
internal interpret interrupt interval intervals into introduced inv invalid invariant inverse
invoke invoked involved involves involving isinstance isn isolated isolation issue issued issues
item items iter iteration iterator its itself jar java job jobs join joined joining joint json
jump junk just justify keep keeping keeps kept kernel key keys keyword keywords kid kill kind
kinds klass know known knows kwargs label labeled labels lag lambda lang language languages lap
large larger largest last late later latest latter lattice launch law layer layout lazy lead
leader leading leads leaf leak least leave leaves leaving left leg legacy legal legend len
length lengths less let lets letter letters lev level levels lib libraries library license
licensed lie lies lift light like likelihood likely likes lim limit limitation limited limits
lin line linear lines link linked links list listed listen listener listeners listing lists lit
literal little live load loaded loader loading loads loc local locale locally locals locate
located location locations lock locked log logged logger logging logic logical login logs lol
long longer longest look looked looking looks lookup loop loops loss lost lot lots low lower
lowest lut mac machine machinery macro made mag magic magnitude mail main mainly maintain
maintained major make makes making man manage managed management manager mandatory manifest
manner manual manually many map mapped mapping maps margin mark marked marker marks mask mass
master mat match matched matches matching math matrices matrix matter matters max maximal
maximum may maybe mean meaning meaningful means meant measure measured measures mechanics
mechanism median medium meet member members memo memory mentioned menu merge merged mesh mess
message messages met meta metadata meter meters meth method methods metric metrics micro mid
middle might min mind minimal minimize minimum minor minute minutes mirror missing mit mix mixed
mixing mock mod modal mode model models modern modes modified modify module modules mol mom
moment moments momentum mon monitor month months more most mostly motion mount mouse move moved
moves moving msg much mul mult multi multiple muscle music must name named names namespace nan
nat native natural nav near nearest nearly necessary need needed needs neg negative neighbor
neighbors neither nest nested net network networks never new newer newly next nice nil nin nit
node nodes noise non none nor norm normal normalized normally not notation note notebook notes
nothing notice notify now nuclear null num number numbers numer numerical numpy obj object
objective objects obs observe observed obtain obtained obtaining obvious occur occurred occurs
oct odd odds off offset often okay old older once one ones only onto open opened opening operand
operate operating operation operations operator operators opposed opposite ops opt optimal
option optional options opts orange orbit ord order ordered ordering orders ordinary org orient
orig origin original originally origins orth other others otherwise our ourselves out outcome
outcomes outer outline output outputs outside over overall overflow overhead overlap override
own owner pack package packages packaging packed packet pad padding page pages pair pairs paper
par paragraph parallel param parameter parameters params parent parents parse parsed parser part
partial partially particle particular partition parts party pass passed passes passing password
past paste pat patch patches path paths pattern patterns pause payload pdf peak peaks peer pen
penalty pending people per percent percentage perfect perform performed performing performs
perhaps period periodic perm permission permitted persistent person phase phases phrase physical
physics pick pid piece pieces pin pip pipe pipeline pixel place placed placement places plain
plan plane plat platform platforms please plot plt plugin plugins plural plus point pointer
pointing points pol polar pole policies policy poll poly polynomial pool pop population port
portion portions ports pos position positions positive possible possibly post potential pow
power powers practice pre prec precise precision pred predicted prediction prefer preference
preferred prefix prep prepare prepared presence present preserve preserved pressed pretty prev
prevent prevents preview previous previously primary prime primitive principal print printed
printer printing prints prior priority private prob probably problem problems proc procedure
proceed process processed processes processing processor prod produce produced produces
producing product production products profile profiles program programs progress project
projection projects promote promotion prompt prop proper properly properties property proposed
props protect protected protection proto protocol prototype provide provided provider providers
provides providing proxy pseudo ptr pub public publish published pull pure purely purpose
purposes push put python quad qualified quality quantity quantum quasi queries query question
questions queue quick quickly quiet quit quite quot quote quoted quotes race rad radical radius
raise raised raises raising ram ran rand random randomly range ranges rank ranked ranks rare rat
rate rather ratio rational raw reach reached reaches read reader readers reading readonly reads
ready real really realm reason reasonable reasons rec receive received receiver receives recent
recipient recognize recognized record recorded recording records recover recovery rect rectangle
red redirect reduce reduced reduces reduction ref refer reference references referred refers
reflect reflected reflection refresh reg regardless regex region regional regions register
registered registry regular reject rejected rel related relation relations relative relatively
release released releases relevant reliable relief rely rem remain remainder remaining remains
remote removal remove removed removing renamed render rendered rendering rep repeat repeated
repeatedly repl replace replaced replacing repo report reported reporter reporting reports
repository represent represents reproduce req request requested requests require required
requires requiring res reserved reset resolution resolve resolved resource resources resp
respect respective response responses rest restart restore restored restrict restricted result
resulting results resume ret retain retained retrieve retry return returned returning returns
retval rev reverse revision rhs rich rid right rights rigid ring rings risk robust role roles
roll room root roots rot rotation roughly round rounded rounds rout route routes routine row
rows rule rules run runner running runs runtime safe safely safety said salt sam same sample
samples sampling sap sat satisfied satisfies satisfy satisfying save saved saving say says
scalar scale scales scaling scan scenario scenarios schedule scheduled schema scheme schemes
scope score scores screen script scripts scroll search searched searching sec second secondary
seconds secret secrets section sections secure security see seed seeds seek seem seems seen
segment segments sel select selected selection selector self sem semi send sender sending sends
sense sensitive sent sep separate separated separately seq sequence sequences ser serial
serialized series serv serve server servers service services ses session sessions set sets
setting settings setup several shall shallow shape shapes share shared shell shield shift
shifted shifts short shorter should shouldn show showing shown shows side sides sig sign signal
signals signature signed signing signs silent silently sim similar similarly simple simpler
simplicity simply sin sinc since single singular site situation situations six size sizeof sizes
skip sleep slice slightly slope slot slots slow slower small smaller smallest smart smooth
snapshot sock socket soft software sol solid solution solutions solve solved solving some
somehow someone something sometimes somewhat somewhere soon sort sorted source sources south
space spaces span spatial spawn spec special specific specified specify spectral spectrum speed
speeds sphere spin spl split splitting spot spread spring sql square src stable stack stage
stages standard star start started starting starts startup stat state statement statements
states static statistics stats status stay std stem step steps still stop stopped stopping stops
storage store stored stores str straight strange strategies strategy stream streaming streams
strength strict strictly stride string strings strip stripped stroke strong strongly struct
structure structured structures stub stuff style styles sub subject submit submitted subs
subsequent subset subst substitute succ succeed succeeded success successful such sufficient
suffix suggested suggestion suitable suite sum summary sun sup super supplied supply support
supported supporting supports supposed suppress sure surface survival swap switch sym symbol
symbols symmetric symmetry sync syntax sys system systems tab table tables tag tags tail take
taken takes taking tall tan tar target targets task tasks tcp team tell tells temp template
templates temporary tend tensor term terminal terms test tested testing tests tex text than that
the their them theme themselves then theorem theory there therefore these they thing things
think third this those though thought thread threads three threshold through throw thrown throws
thus ticket tie tied ties tile tim time timeout timer times timestamp timing tiny tip title
titles tmp today todo together toggle tok token tokens tolerance too tool tools top topic topics
torch tot total touch tout towards trace traces tracing track tracking trail trailer trailing
trait traits trans transfer transform transition translate translated transport tre treat
treated treatment tree trees tri trial trials triangle trick tried tries trigger triggered trim
trip triple trivial true trunc trust trusted truth try trying tuple turn turned turns twice two
txt typ type typed typedef types typical typically typing uid uint unable undefined under
underlying understand unexpected uniform union unique unit units unity universal unknown unless
unlike unlikely unsafe unset unsigned until unused update updated updates updating upgrade
upload upon upper uri url usage use used useful user username users uses using usual usually utf
util utility utils uuid val valid validate validation value valued values van var variable
variables variance variant variation variations varies various vars vary varying vec vector
vectors vel velocity vendor ver verified verify version versions vertex vertical vertices very
via vice video view views violation virtual visible visit visited visiting visitor visitors
visits visual voice void vol volt volume volumes von wait waiting wake walk want wanted wants
warn warning warnings was wasn watch wave way ways weak web wed week weight weights weird
welcome well were west what whatever wheel wheels when whenever where whereas whether which
while white who whole whose why wide widget width will win window windows wisdom wise wish with
withdraw within without won word words work worked worker workers working works world worst
worth would wrap wrapped wrapper write writer writers writes writing written wrong www xml year
years yellow yes yet yield yields you your zero zip zone zones zoom
"""
WORDS: tuple[str, ...] = tuple(_WORDS_TEXT.split())

_NAMES_TEXT = """
Aaron Abigail Adam Adrian Aiden Alan Albert Alex Alice Amanda Amber Amelia Amy Andrea Andrew
Angela Anna Anthony Arthur Ashley Audrey Ava Barbara Beatrice Benjamin Bernard Beth Blake Brandon
Brenda Brian Bruce Caleb Cameron Carl Carlos Carmen Caroline Carter Catherine Charles Charlotte
Chloe Christian Claire Clara Colin Connor Daniel David Dennis Diana Diego Dominic Dorothy Dylan
Edgar Edith Edward Eleanor Elena Eli Elijah Elise Ella Emily Emma Eric Erin Ethan Eva Evan Felix
Fiona Frank Freya Gabriel George Gloria Grace Gregory Hannah Harold Harry Hazel Helen Henry Hugo
Ian Irene Isaac Isabel Ivan Jack Jacob James Jane Jasmine Jason Jean Jessica Joan John Jonas
Jordan Joseph Joshua Julia Julian Justin Karen Kate Keith Kevin Kyle Laura Lauren Leo Leon Liam
Lily Linda Lisa Logan Louis Lucas Lucy Luke Lydia Madison Maria Marcus Margaret Mark Martha Martin
Mason Matthew Maya Megan Melissa Mia Michael Miguel Mila Miles Molly Monica Nancy Naomi Nathan
Nicole Noah Nora Oliver Olivia Omar Oscar Owen Pablo Pamela Patrick Paul Peter Philip Priya Quinn
Rachel Rafael Ralph Raymond Rebecca Richard Rita Robert Rosa Ruby Ryan Samuel Sandra Sara Scott
Sean Sebastian Sofia Sophie Stella Stephen Steven Susan Sylvia Tara Teresa Thomas Tiffany Timothy
Tina Tobias Tom Tyler Uma Valerie Vera Victor Vincent Violet Walter Wendy William Xavier Yara
Yusuf Zach Zara Zoe Ahmed Akira Amara Anika Aryan Bianca Chen Dara Elif Farah Hana Ines Kai Keiko
Lars Leila Malik Mei Nadia Nikolai Olga Rahul Ravi Sakura Sven Tariq Yuki Zain
"""
NAMES: tuple[str, ...] = tuple(_NAMES_TEXT.split())

# (country, capital); capital cities as commonly given in English, ASCII only.
CAPITALS: tuple[tuple[str, str], ...] = (
    ("Afghanistan", "Kabul"),
    ("Albania", "Tirana"),
    ("Algeria", "Algiers"),
    ("Argentina", "Buenos Aires"),
    ("Armenia", "Yerevan"),
    ("Australia", "Canberra"),
    ("Austria", "Vienna"),
    ("Azerbaijan", "Baku"),
    ("Bangladesh", "Dhaka"),
    ("Belarus", "Minsk"),
    ("Belgium", "Brussels"),
    ("Bolivia", "Sucre"),
    ("Brazil", "Brasilia"),
    ("Bulgaria", "Sofia"),
    ("Cambodia", "Phnom Penh"),
    ("Cameroon", "Yaounde"),
    ("Canada", "Ottawa"),
    ("Chile", "Santiago"),
    ("China", "Beijing"),
    ("Colombia", "Bogota"),
    ("Croatia", "Zagreb"),
    ("Cuba", "Havana"),
    ("Cyprus", "Nicosia"),
    ("Czechia", "Prague"),
    ("Denmark", "Copenhagen"),
    ("Ecuador", "Quito"),
    ("Egypt", "Cairo"),
    ("Estonia", "Tallinn"),
    ("Ethiopia", "Addis Ababa"),
    ("Finland", "Helsinki"),
    ("France", "Paris"),
    ("Georgia", "Tbilisi"),
    ("Germany", "Berlin"),
    ("Ghana", "Accra"),
    ("Greece", "Athens"),
    ("Hungary", "Budapest"),
    ("Iceland", "Reykjavik"),
    ("India", "New Delhi"),
    ("Indonesia", "Jakarta"),
    ("Iran", "Tehran"),
    ("Iraq", "Baghdad"),
    ("Ireland", "Dublin"),
    ("Israel", "Jerusalem"),
    ("Italy", "Rome"),
    ("Jamaica", "Kingston"),
    ("Japan", "Tokyo"),
    ("Jordan", "Amman"),
    ("Kazakhstan", "Astana"),
    ("Kenya", "Nairobi"),
    ("Latvia", "Riga"),
    ("Lebanon", "Beirut"),
    ("Lithuania", "Vilnius"),
    ("Luxembourg", "Luxembourg"),
    ("Malaysia", "Kuala Lumpur"),
    ("Mexico", "Mexico City"),
    ("Mongolia", "Ulaanbaatar"),
    ("Morocco", "Rabat"),
    ("Nepal", "Kathmandu"),
    ("Netherlands", "Amsterdam"),
    ("New Zealand", "Wellington"),
    ("Nigeria", "Abuja"),
    ("North Korea", "Pyongyang"),
    ("Norway", "Oslo"),
    ("Pakistan", "Islamabad"),
    ("Peru", "Lima"),
    ("Philippines", "Manila"),
    ("Poland", "Warsaw"),
    ("Portugal", "Lisbon"),
    ("Qatar", "Doha"),
    ("Romania", "Bucharest"),
    ("Russia", "Moscow"),
    ("Saudi Arabia", "Riyadh"),
    ("Senegal", "Dakar"),
    ("Serbia", "Belgrade"),
    ("Singapore", "Singapore"),
    ("Slovakia", "Bratislava"),
    ("Slovenia", "Ljubljana"),
    ("South Africa", "Pretoria"),
    ("South Korea", "Seoul"),
    ("Spain", "Madrid"),
    ("Sri Lanka", "Colombo"),
    ("Sweden", "Stockholm"),
    ("Switzerland", "Bern"),
    ("Syria", "Damascus"),
    ("Thailand", "Bangkok"),
    ("Tunisia", "Tunis"),
    ("Turkey", "Ankara"),
    ("Uganda", "Kampala"),
    ("Ukraine", "Kyiv"),
    ("United Kingdom", "London"),
    ("United States", "Washington"),
    ("Uruguay", "Montevideo"),
    ("Uzbekistan", "Tashkent"),
    ("Venezuela", "Caracas"),
    ("Vietnam", "Hanoi"),
    ("Zimbabwe", "Harare"),
)
